"""What a run's configuration may say, checked before any run starts.

Typed schemas for config groups, so Hydra itself rejects a wrong type or value
(`trainer.epochs=many`, `trainer.precision=float16`); then the checks Hydra
cannot make: settings nobody reads, values out of range, references that point
nowhere. Every refusal is a ConfigError naming the setting and what to do.
"""

import difflib
import math
from dataclasses import dataclass, fields
from enum import Enum

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from experiments.sweep import settings as sweeper_settings


class ConfigError(ValueError):
    """A setting has a value the run cannot use; the message names it."""


class Precision(Enum):
    float32 = "float32"
    float64 = "float64"
    bf16 = "bf16"  # mixed: float32 master weights and optimizer state, bfloat16 compute
    bfloat16 = "bfloat16"  # the same as bf16


class Schedule(Enum):
    constant = "constant"
    cosine = "cosine"


@dataclass
class TrainerSettings:
    epochs: int = 20
    batch_size: int = 64
    eval_batch_size: int = 512
    lr_schedule: Schedule = Schedule.cosine
    warmup_steps: int = 0
    log_every_n_steps: int = 10
    checkpoint_every_n_epochs: int = 1
    checkpoint_min_seconds: float = 30.0
    precision: Precision = Precision.float32
    jit: bool = True
    devices: int = 1
    progress: bool = True
    resume: str | None = None


@dataclass
class TrackingSettings:
    enabled: bool = True
    uri: str | None = None
    experiment: str = "${task.name}"
    log_graph: bool = True
    graph_depth: str | None = "auto"
    log_model: bool = True
    registered_model: str | None = None
    system_metrics: float | None = None


def register() -> None:
    """Make the schemas known to Hydra's ConfigStore (conf/ builds on them: the trainer,
    tracking and Tune sweeper groups); before Hydra composes a configuration."""
    store = ConfigStore.instance()
    store.store(group="trainer", name="schema", node=TrainerSettings)
    store.store(group="tracking", name="schema", node=TrackingSettings)
    sweeper_settings.register()


TOP_LEVEL = {
    "task",
    "model",
    "dataset",
    "optimizer",
    "trainer",
    "callbacks",
    "tracking",
    "seed",
    "run_name",
    "output_dir",
    "launch",
}
# filled by the entry point or a sweep engine (source, shared, deferred, tags: experiments.sweep.worker)
LAUNCH = {"overrides", "sweep_run_id", "trial", "source", "shared", "deferred", "tags"}
AT_LEAST = {
    "trainer.epochs": 1,
    "trainer.batch_size": 1,
    "trainer.eval_batch_size": 1,
    "trainer.warmup_steps": 0,
    "trainer.log_every_n_steps": 1,
    "trainer.checkpoint_every_n_epochs": 1,
    "trainer.checkpoint_min_seconds": 0,
    "trainer.devices": 0,
    "tracking.system_metrics": 0.1,
}


def check(cfg):
    """Every check below, in the order a user would want to hear about them."""
    check_keys(cfg)
    check_values(cfg)
    check_references(cfg)


def check_keys(cfg):
    """Refuse settings nobody reads (`+trainer.epoch=3` next to trainer.epochs), naming
    the closest real one: Hydra lets `+` add any key, and a typo must not train
    silently with the default."""
    groups = {
        "": TOP_LEVEL,
        "trainer.": {f.name for f in fields(TrainerSettings)},
        "tracking.": {f.name for f in fields(TrackingSettings)},
        "launch.": LAUNCH,
    }
    for prefix, known in groups.items():
        node = cfg.get(prefix.rstrip(".")) if prefix else cfg
        for key in node.keys() if node is not None else ():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {prefix}{close[0]}?" if close else ""
                raise ConfigError(f"unknown setting {prefix}{key}{hint}")


def check_values(cfg):
    """Numbers a run cannot train with (`trainer.batch_size=0`, `optimizer.lr=abc`)."""
    for key, least in AT_LEAST.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value < least:
            raise ConfigError(f"{key} must be at least {least}, got {value}")
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if not OmegaConf.select(cfg, "tracking.experiment"):
        raise ConfigError("tracking.experiment must name an MLflow experiment, got an empty name")
    depth = OmegaConf.select(cfg, "tracking.graph_depth")
    if depth not in (None, "auto") and not (isinstance(depth, str) and depth.isdigit()):
        raise ConfigError(f"tracking.graph_depth must be null, auto or an integer >= 0, got {depth!r}")
    registered = OmegaConf.select(cfg, "tracking.registered_model")
    if registered is not None and (
        not isinstance(registered, str) or registered.strip(". ") == "" or any(c in registered for c in "/:%\\")
    ):
        raise ConfigError(
            f"tracking.registered_model={registered!r} is not a name MLflow's model registry takes: no '/', ':', '%' "
            "or '\\', not empty (e.g. tracking.registered_model=digits-mlp)"
        )
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"optimizer.lr must be a positive number, got {lr!r}")


def check_references(cfg):
    """Refuse a configuration whose ${...} references point nowhere, before a run
    starts: that is a model and a dataset that do not fit together
    (model=transformer_classifier wants token ids, dataset=digits has none)."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        setting = e.full_key
        raise ConfigError(f"{setting} is not set (???): give it on the command line, {setting}=...") from None
    except InterpolationResolutionError as e:
        choices = (
            ""
            if cfg.get("model") is None or cfg.get("dataset") is None
            else (
                f": model {cfg.model.get('_target_', '?').rsplit('.', 1)[-1]} does not fit dataset "
                f"{cfg.dataset.get('name', '?')}; pick a dataset that provides it, or a preset "
                "from conf/experiment/ (+experiment=...)"
            )
        )
        raise ConfigError(f"{e.full_key}: {(e.msg or str(e)).splitlines()[0]}{choices}") from None
