"""The Tune sweeper's settings (hydra.sweeper.*, conf/hydra/sweeper/tune.yaml) as a
structured config: Hydra itself refuses a wrong type or value
(`hydra.sweeper.scheduler=fast`, `hydra.sweeper.num_samples=many`, a misspelt key);
`check` then refuses what a type cannot say (ranges, settings that do not go
together), before Ray starts. Every refusal names the setting."""

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

SWEEPER_TARGET = "hydra_plugins.zkynet_tune.tune_sweeper.TuneSweeper"
SCHEMA = "tune_schema"  # its name in the hydra/sweeper group (tune.yaml's defaults)
TUNE_FOLDER = "tune"  # Tune's own records of the sweep, inside the sweep folder
# what population-based training may change mid-trial: values that change neither shapes nor code
PBT_MUTABLE = ("optimizer.", "model.dropout")


class SweeperSettingsError(ValueError):
    """A hydra.sweeper setting the sweep cannot run with; the message names it."""


class Search(Enum):
    grid = "grid"  # choices form a grid, intervals are sampled
    random = "random"  # choices sampled too
    optuna = "optuna"  # Bayesian


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
    resume: bool = False
    compilation_cache: str = "~/.cache/zkynet/jax"
    ray: RayCluster = field(default_factory=RayCluster)

    @property
    def packed(self) -> bool:
        return bool(self.pack != 1)

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
    """What the types cannot say: ranges, and settings that do not go together."""
    s = settings
    if s.scheduler is Scheduler.pbt:
        fixed = [k for k in swept_keys if not k.lstrip("+").startswith(PBT_MUTABLE)]
        if not swept_keys or fixed:
            raise SweeperSettingsError(
                f"hydra.sweeper.scheduler=pbt mutates hyperparameters that change neither shapes "
                f"nor code ({', '.join(PBT_MUTABLE)}...); sweep some of those"
                + (f", not {', '.join(fixed)}" if fixed else "")
            )
    if s.num_samples < 1:
        raise SweeperSettingsError(f"hydra.sweeper.num_samples must be a positive integer, got {s.num_samples!r}")
    if s.max_concurrent is not None and s.max_concurrent < 1:
        raise SweeperSettingsError(
            f"hydra.sweeper.max_concurrent must be a positive integer or null, got {s.max_concurrent!r}"
        )
    if s.pack != "auto" and not (isinstance(s.pack, int) and s.pack >= 1):
        raise SweeperSettingsError(f"hydra.sweeper.pack must be a positive integer or auto, got {s.pack!r}")
    if s.packed and s.scheduler is Scheduler.pbt:
        raise SweeperSettingsError(
            "hydra.sweeper.pack cannot be combined with scheduler=pbt: population-based training "
            "moves weights between trials through Tune checkpoints, one per trial; use pack=1"
        )
    if s.resume and not (sweep_dir / TUNE_FOLDER).exists():
        raise SweeperSettingsError(
            f"hydra.sweeper.resume=true, but {sweep_dir} holds no sweep to resume "
            "(pass the hydra.sweep.dir of the interrupted sweep)"
        )
