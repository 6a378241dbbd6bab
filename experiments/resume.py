"""Continuing a run instead of starting a new one: `trainer.resume=<run id>`, or a
sweep's trial that runs again after its worker died. Either way the run goes on
in the same MLflow run, from its last checkpoint, with the configuration it
started with."""

import time
from dataclasses import dataclass
from typing import Any

from mlflow.entities import RunTag
from omegaconf import OmegaConf

from experiments import lineage, ownership
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
    claim: Any = None  # this process's claim on the run (experiments.ownership), held until it ends
    best: dict | None = None  # the run's best checkpoint so far, if it keeps one


def continuation(cfg, client, uri):
    """What this invocation continues, if anything. A continued run is claimed first
    (one process at a time); the claim is released if continuing it is refused."""
    if cfg.trainer.resume:
        return _claimed(client, uri, cfg.trainer.resume, lambda: _resumed(cfg, client, cfg.trainer.resume, uri))
    if cfg.launch.sweep_run_id is not None and cfg.launch.trial is not None:
        earlier = lineage.earlier_attempt(client, cfg.launch.sweep_run_id, cfg.launch.trial)
        if earlier is not None:
            return _claimed(client, uri, earlier.info.run_id, lambda: _retried(cfg, client, earlier))
    return Continuation(cfg)


def _claimed(client, uri, run_id, continued):
    try:
        run = client.get_run(run_id)
    except Exception as e:
        raise ConfigError(f"trainer.resume={run_id}: no such MLflow run in {client.tracking_uri}") from e
    if ownership.claims_folder(uri) is None and lineage.is_alive(run):  # a tracking server: no lock to ask
        tags = run.data.tags
        raise ownership.RunClaimedError(
            f"run {run_id} is still RUNNING (pid {tags.get(lineage.PID)} on {tags.get(lineage.HOST)}); "
            "stop it first, or wait for it to end"
        )
    claim = ownership.claim(client, uri, run_id, _attempts(run) + 1)
    try:
        found = continued()
    except BaseException:
        claim.release()
        raise
    found.claim = claim
    return found


def _resumed(cfg, client, run_id, uri):
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
    run = client.get_run(run_id)
    stored, state = lineage.stored_config_and_checkpoint(client, run_id)
    if state is None:
        raise ConfigError(_no_checkpoint(client, run, stored))
    for key in {*THIS_INVOCATION, *changed}:
        OmegaConf.update(stored, key, OmegaConf.select(cfg, key), force_add=True)  # None: a removed callback
    return Continuation(stored, run_id, state, _attempts(run) + 1, best=lineage.best_checkpoint(client, run_id))


def _no_checkpoint(client, run, stored):
    """Why run `run` has no checkpoint, naming the settings that decided it; a run left
    RUNNING by a dead process is ended KILLED first (it cannot be resumed)."""
    trainer = stored.get("trainer", {})
    every, seconds = trainer.get("checkpoint_every_n_epochs", 1), trainer.get("checkpoint_min_seconds", 0)
    run_id = run.info.run_id
    reason = (
        f"run {run_id} has no checkpoint to resume from: it stopped during its first epoch (a run saves one "
        f"after its first epoch, then every trainer.checkpoint_every_n_epochs={every} epochs, at most once per "
        f"trainer.checkpoint_min_seconds={seconds} s, and when it is stopped)"
    )
    if run.info.status == "RUNNING":
        client.log_batch(run_id, tags=[RunTag(lineage.ERROR, f"{reason}; ended KILLED by trainer.resume")])
        client.set_terminated(run_id, "KILLED", end_time=int(time.time() * 1000))
        reason += "; it was left RUNNING by a process that died, and is now ended KILLED"
    return f"{reason}. Start it again as a new run (the same command without trainer.resume)"


def _retried(cfg, client, earlier):
    """A sweep trial's next attempt: its first attempt's run, from its checkpoint (if
    it wrote one before it died)."""
    _, state = lineage.stored_config_and_checkpoint(client, earlier.info.run_id)
    best = lineage.best_checkpoint(client, earlier.info.run_id)
    return Continuation(cfg, earlier.info.run_id, state, _attempts(earlier) + 1, best=best)


def _attempts(run):
    return int(run.data.tags.get(lineage.ATTEMPTS, "1"))
