"""Train one model, tracked in MLflow: `python -m experiments.run [overrides]`.

Hydra composes conf/config.yaml with its groups (task, dataset, model,
optimizer, trainer, callbacks, tracking, and +experiment=...); this entry point
adds what only Hydra knows (the output folder, the run's name, the command-line
overrides, the sweep a -m job belongs to) to the config and hands it to
`experiments.runner.run`, which is callable without Hydra too.

Importing this module changes nothing in the process; `main()` sets the process
up (its loggers, Hydra's config store and plugin path) and then hands the
command line to Hydra.

An error the user can fix (a setting, a data file, a checkpoint, the store, a loss
that diverged, a metric of their own) is one line on stderr and exit code 2,
also when the run had started: the run ends FAILED with the reason, and the full
traceback is in its output folder (error.txt) and its MLflow run.

`experiments.run(cfg)` in Python is `experiments.runner.run` (this module is
callable: `import experiments.run` binds this module as `experiments.run`).
"""

import difflib
import logging
import sys
import types
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from experiments import CONF, lineage, schema
from experiments.runner import run
from experiments.schema import ConfigError
from experiments.tracking import TrackingError, connect, default_tracking_uri
from zkynet.checkpoint import CheckpointError
from zkynet.data import DatasetFileError, DatasetNotFoundError
from zkynet.training import NonFiniteLossError
from zkynet.training.trainer import MetricError

# Hydra looks for sweepers in the `hydra_plugins` namespace package only: ours (the Tune sweeper)
# joins it from experiments/plugins/ (the repository's top level is the user's)
PLUGINS = str(Path(__file__).parent / "plugins")

__all__ = ["main", "run"]


def with_launch(cfg, hydra_config):
    """`cfg` with Hydra's output folder, a unique model-dataset run name, the overrides, and
    for a job of a tracked sweep by Hydra's basic sweeper, the sweep's MLflow run and
    the job's number."""
    with open_dict(cfg):
        cfg.output_dir = cfg.output_dir or hydra_config.runtime.output_dir
        choices = hydra_config.runtime.choices
        cfg.run_name = cfg.run_name or lineage.run_name(choices["model"], choices["dataset"])
        cfg.launch.overrides = list(hydra_config.overrides.task)
        if hydra_config.mode == RunMode.MULTIRUN and cfg.tracking.enabled:
            client = connect(cfg.tracking.uri or default_tracking_uri())
            experiments = [
                e.experiment_id for e in client.search_experiments()
            ]  # a job's task may differ from the sweep's
            sweep = lineage.sweep_run(client, experiments, str(hydra_config.sweep.dir))
            if sweep:
                cfg.launch.sweep_run_id, cfg.launch.trial = (
                    sweep.info.run_id,
                    hydra_config.job.num + 1,
                )  # from 1, as Tune's
    return cfg


USERS_TO_FIX = (
    ConfigError,
    DatasetNotFoundError,
    DatasetFileError,
    CheckpointError,
    TrackingError,
    NonFiniteLossError,
    MetricError,
)


def users_to_fix(error):
    """The error in `error`'s chain (causes, contexts) that a user can fix, or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, USERS_TO_FIX):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def unknown_setting(arguments, conf=CONF):
    """What is wrong with the first override whose key names nothing (`modle=mlp`,
    `epochs=5`), with the setting meant when one is close; None if all name something.
    (Hydra says it in five lines, exit code 1.) Appends (+key), deletions and hydra.*
    are Hydra's to check."""
    groups = {path.name: path for path in conf.iterdir() if path.is_dir() and path.name != "hydra"}
    known = set(groups) | {str(k) for k in OmegaConf.load(conf / "config.yaml") if k != "defaults"} | {"hydra"}
    for argument in arguments:
        key = argument.split("=", 1)[0]
        if argument.startswith("-") or "=" not in argument or key.startswith(("+", "~")):
            continue
        top = key.split(".")[0].split("/")[0].split("@")[0]  # hydra/sweeper=basic, group@package
        if top in known:
            continue
        meant = [f"{group}.{top}" for group, folder in groups.items() if _first_level_key(folder, top)]
        meant += difflib.get_close_matches(top, sorted(known), n=1)
        hint = f"; did you mean {meant[0]}?" if meant else ""
        return f"unknown setting {key!r} in {argument!r}{hint} (settings: {', '.join(sorted(known - {'hydra'}))})"
    return None


def _first_level_key(folder, key):
    """Whether some option of config group `folder` sets `key` at its first level."""
    for path in folder.glob("*.yaml"):
        loaded = OmegaConf.load(path)
        if OmegaConf.is_dict(loaded) and key in loaded:
            return True
    return False


def main() -> None:
    """`python -m experiments.run [overrides]`: this process set up, then Hydra."""
    problem = unknown_setting(sys.argv[1:])
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" is not news
    schema.register()
    if PLUGINS not in sys.path:
        sys.path.append(PLUGINS)
    train()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def train(cfg):
    """One job: a run, or one of a sweep's jobs on Hydra's basic sweeper (the Tune sweeper
    runs its trials itself, experiments.sweep)."""
    hydra_config = HydraConfig.get()
    sweeping = hydra_config.mode == RunMode.MULTIRUN
    try:
        return run(with_launch(cfg, hydra_config)).objective
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as e:
        if sweeping:
            return float("nan")  # recorded as a FAILED child run; the sweep goes on and fails at the end
        fixable = users_to_fix(e)
        if fixable is None:
            raise
        print(f"error: {fixable}", file=sys.stderr)  # no traceback: the message says what to fix
        raise SystemExit(2) from None


class _CallableModule(types.ModuleType):
    """This module, callable as experiments.run(cfg): `import experiments.run` makes the
    package's `run` this module, and it still runs a config."""

    def __call__(self, cfg, *args, **kwargs):
        return run(cfg, *args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


if __name__ == "__main__":
    main()
