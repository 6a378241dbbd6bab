"""Continuing a run instead of starting a new one: `trainer.resume=<run id>`, or a
sweep's trial that runs again after its worker died. Either way the run goes on
in the same MLflow run, from its last checkpoint, with the configuration it
started with."""

from dataclasses import dataclass

from omegaconf import OmegaConf

from experiments import lineage
from experiments.schema import ConfigError

# what may change on the command line when resuming: more epochs, how it logs and is watched, where
RESUME_OVERRIDES = (
    "trainer.resume",
    "trainer.epochs",
    "trainer.progress",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_epochs",
    "trainer.checkpoint_min_seconds",
    "tracking.uri",
    "callbacks",
)
# what always comes from this invocation, not from the stored config
THIS_INVOCATION = ("output_dir", "launch", "trainer.resume")


@dataclass
class Continuation:
    cfg: object  # the configuration to train with
    run_id: str | None = None  # the MLflow run to continue (None: a new run)
    state: dict | None = None  # the training state to start from (None: from scratch)
    attempt: int = 1  # which attempt at this run this process makes


def continuation(cfg, client):
    """What this invocation continues, if anything."""
    if cfg.trainer.resume:
        return _resumed(cfg, client, cfg.trainer.resume)
    if cfg.launch.sweep_run_id is not None and cfg.launch.trial is not None:
        earlier = lineage.earlier_attempt(client, cfg.launch.sweep_run_id, cfg.launch.trial)
        if earlier is not None:
            return _retried(cfg, client, earlier)
    return Continuation(cfg)


def _resumed(cfg, client, run_id):
    """The run's own config (so the same model and data come back) with the few
    settings that may change, and its last checkpoint."""
    changed = [o.split("=", 1)[0].lstrip("+~") for o in cfg.launch.overrides]
    refused = [key for key in changed if not any(key == k or key.startswith(f"{k}.") for k in RESUME_OVERRIDES)]
    if refused:
        raise ConfigError(
            f"trainer.resume continues run {run_id} with its own configuration; on the "
            f"command line only {', '.join(RESUME_OVERRIDES[1:])} may change, not: "
            f"{', '.join(refused)}"
        )
    try:
        run = client.get_run(run_id)
    except Exception as e:
        raise ConfigError(f"trainer.resume={run_id}: no such MLflow run in {client.tracking_uri}") from e
    if lineage.is_alive(run):
        tags = run.data.tags
        raise ConfigError(
            f"run {run_id} is still RUNNING (pid {tags.get(lineage.PID)} on {tags.get(lineage.HOST)}); "
            "stop it first, or wait for it to end"
        )
    stored, state = lineage.stored_config_and_checkpoint(client, run_id)
    if state is None:
        raise ConfigError(
            f"run {run_id} has no checkpoint to resume from (it saves one every "
            "trainer.checkpoint_every_n_epochs epochs)"
        )
    for key in {*THIS_INVOCATION, *changed}:
        OmegaConf.update(stored, key, OmegaConf.select(cfg, key), force_add=True)  # None: a removed callback
    return Continuation(stored, run_id, state, _attempts(run) + 1)


def _retried(cfg, client, earlier):
    """A sweep trial's next attempt: its first attempt's run, from its checkpoint (if
    it wrote one before it died)."""
    _, state = lineage.stored_config_and_checkpoint(client, earlier.info.run_id)
    return Continuation(cfg, earlier.info.run_id, state, _attempts(earlier) + 1)


def _attempts(run):
    return int(run.data.tags.get(lineage.ATTEMPTS, "1"))
