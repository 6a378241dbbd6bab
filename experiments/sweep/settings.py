"""The Tune sweeper's settings (hydra.sweeper.*, conf/hydra/sweeper/tune.yaml) as a
structured config: Hydra itself refuses a wrong type or value
(`hydra.sweeper.scheduler=fast`, `hydra.sweeper.num_samples=many`, a misspelt key);
`check` then refuses what a type cannot say (ranges, settings that do not go
together), before Ray starts. Every refusal names the setting."""

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

SWEEPER_TARGET = "hydra_plugins.zkynet_tune.tune_sweeper.TuneSweeper"
SCHEMA = "tune_schema"  # its name in the hydra/sweeper group (tune.yaml's defaults)
TUNE_FOLDER = "tune"  # Tune's own records of the sweep, inside the sweep folder (tune-2, ... when resumed)
RECORD = "sweep.json"  # what the sweep was run with, inside the sweep folder: what a resume must match
# what population-based training may change mid-trial: values that change neither shapes nor code
PBT_MUTABLE = ("optimizer.", "model.dropout")


class SweeperSettingsError(ValueError):
    """A hydra.sweeper setting the sweep cannot run with; the message names it."""


class Search(Enum):
    grid = "grid"  # choices form a grid, intervals are sampled
    random = "random"  # choices sampled too
    optuna = "optuna"  # Bayesian


class Results(Enum):
    best = "best"  # the best trial's curves, samples and model, drawn when the sweep ends
    every = "every"  # every trial's, as it ends (as a run alone)


class Scheduler(Enum):
    fifo = "fifo"
    asha = "asha"
    pbt = "pbt"


@dataclass
class Asha:
    grace_period: int = 1
    reduction_factor: float = 4


@dataclass
class Pbt:
    interval: int = 2
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25


@dataclass
class Resources:
    cpu: float = 1
    gpu: Any = "auto"  # "auto" or a number of GPUs (OmegaConf has no union of str and float)


@dataclass
class RayCluster:
    address: str | None = None
    num_cpus: int | None = None


@dataclass
class SweeperSettings:
    _target_: str = SWEEPER_TARGET
    search: Search = Search.grid
    num_samples: int = 1
    seed: int = 0
    scheduler: Scheduler = Scheduler.fifo
    asha: Asha = field(default_factory=Asha)
    pbt: Pbt = field(default_factory=Pbt)
    pack: Any = 1  # a positive integer or "auto"
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int | None = None
    max_failures: int = 2
    results: Results = Results.best
    resume: bool = False
    compilation_cache: str = "~/.cache/zkynet/jax"
    jax_platforms: str | None = None  # JAX's platform in a trial: null: cuda when it was given a GPU, else cpu
    ray: RayCluster = field(default_factory=RayCluster)

    @property
    def packed(self) -> bool:
        """Whether trials train K at a time (pack=auto with Bayesian search: one at a time)."""
        return bool(self.pack != 1) and not (self.pack == "auto" and self.search is Search.optuna)

    def loggable(self) -> dict[str, str]:
        """The top-level settings (not the nested groups) as MLflow params, `sweeper/<key>`."""
        container = OmegaConf.to_container(OmegaConf.structured(self), enum_to_str=True)
        assert isinstance(container, dict)
        return {
            f"sweeper/{key!s}": str(value)
            for key, value in container.items()
            if key != "_target_" and not isinstance(value, dict)
        }


def register() -> None:
    """Make the schema known to Hydra (conf/hydra/sweeper/tune.yaml builds on it)."""
    ConfigStore.instance().store(group="hydra/sweeper", name=SCHEMA, node=SweeperSettings, provider="zkynet")


def from_hydra(settings: dict[str, Any]) -> SweeperSettings:
    """The settings Hydra hands the sweeper (the hydra.sweeper node, less its _target_)."""
    merged = OmegaConf.merge(OmegaConf.structured(SweeperSettings), settings)
    typed = OmegaConf.to_object(merged)
    assert isinstance(typed, SweeperSettings)
    return typed


def check(settings: SweeperSettings, swept_keys: list[str], sweep_dir: Path) -> None:
    """What the types cannot say: ranges, and settings that do not go together. One
    line each, naming the setting (Ray's own checks would assert with a traceback)."""
    s = settings
    _at_least("num_samples", s.num_samples, 1)
    _at_least("asha.grace_period", s.asha.grace_period, 1, "epochs every trial trains before ASHA may stop it")
    _above("asha.reduction_factor", s.asha.reduction_factor, 1, "ASHA keeps 1/reduction_factor of each rung")
    _at_least("pbt.interval", s.pbt.interval, 1, "epochs between two exploit steps")
    _within("pbt.quantile_fraction", s.pbt.quantile_fraction, 0, 0.5, "the share of the population at each end")
    _within("pbt.resample_probability", s.pbt.resample_probability, 0, 1, "a probability", low_open=False)
    _at_least("max_failures", s.max_failures, -1, "-1: retry without limit")
    if s.max_concurrent is not None:
        _at_least("max_concurrent", s.max_concurrent, 1, "or null: as many as resources allow")
    if s.ray.num_cpus is not None:
        _at_least("ray.num_cpus", s.ray.num_cpus, 1, "or null: all of this machine's")
    _resources(s.resources)
    if s.pack != "auto" and not (isinstance(s.pack, int) and not isinstance(s.pack, bool) and s.pack >= 1):
        raise SweeperSettingsError(f"hydra.sweeper.pack must be a positive integer or auto, got {s.pack!r}")
    if s.search is Search.optuna and s.pack not in (1, "auto"):
        raise SweeperSettingsError(
            "hydra.sweeper.pack: packed trials are formed before any trial runs, but Bayesian search picks "
            "each trial from the results so far (search=optuna); use search=grid or random to pack"
        )
    if s.search is Search.optuna and s.scheduler is Scheduler.pbt:
        raise SweeperSettingsError(
            "hydra.sweeper.scheduler=pbt: population-based training explores by itself; use it with "
            "search=grid or random, not optuna"
        )
    if s.scheduler is Scheduler.pbt:
        fixed = [k for k in swept_keys if not k.lstrip("+").startswith(PBT_MUTABLE)]
        if not swept_keys or fixed:
            raise SweeperSettingsError(
                f"hydra.sweeper.scheduler=pbt mutates hyperparameters that change neither shapes "
                f"nor code ({', '.join(PBT_MUTABLE)}...); sweep some of those"
                + (f", not {', '.join(fixed)}" if fixed else "")
            )
    if s.resume and not (sweep_dir / RECORD).exists():
        raise SweeperSettingsError(
            f"hydra.sweeper.resume=true, but {sweep_dir} holds no sweep to resume "
            "(pass the hydra.sweep.dir of the interrupted sweep)"
        )


def _resources(resources: Resources) -> None:
    cpu, gpu = resources.cpu, resources.gpu
    if not _number(cpu) or cpu < 0:
        raise SweeperSettingsError(f"hydra.sweeper.resources.cpu must be a number >= 0, got {cpu!r}")
    if gpu == "auto":
        return
    if not _number(gpu) or gpu < 0 or (gpu > 1 and gpu != int(gpu)):
        raise SweeperSettingsError(
            "hydra.sweeper.resources.gpu must be auto, a whole number of GPUs, or a fraction of one "
            f"(0.25: four trials share a GPU), got {gpu!r}"
        )
    if cpu == 0 and gpu == 0:
        raise SweeperSettingsError("hydra.sweeper.resources: a trial must ask for some CPU or GPU, not cpu=0 gpu=0")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _at_least(key: str, value: Any, low: int, meaning: str = "") -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        rule = "a positive integer" if low == 1 else f"an integer >= {low}"
        meant = f" ({meaning})" if meaning else ""
        raise SweeperSettingsError(f"hydra.sweeper.{key} must be {rule}{meant}, got {value!r}")


def _above(key: str, value: Any, low: float, meaning: str) -> None:
    if not (_number(value) and value > low):
        raise SweeperSettingsError(f"hydra.sweeper.{key} must be a number > {low:g} ({meaning}), got {value!r}")


def _within(key: str, value: Any, low: float, high: float, meaning: str, low_open: bool = True) -> None:
    if not (_number(value) and (value > low if low_open else value >= low) and value <= high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise SweeperSettingsError(f"hydra.sweeper.{key} must be in {interval} ({meaning}), got {value!r}")
