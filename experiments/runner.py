"""One training run from its configuration: `run(cfg)`.

Callable in-process (tests, a sweep engine) as well as from the command line:
everything it needs is in `cfg`; the entry point (experiments/run.py) only
fills in what Hydra knows (output folder, run name, overrides, sweep). The
order matters: every check that can refuse the configuration runs before an
MLflow run exists, and from the moment one exists a Run (experiments.lifecycle)
owns it, so it always ends FINISHED, KILLED or FAILED.
"""

import copy
import datetime
import hashlib
import json
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict

from experiments import artifacts, build, lineage, ownership, resume, schema
from experiments.finish import Ending, RunResult
from experiments.lifecycle import Run, RunTrainer
from experiments.schema import ConfigError
from experiments.tracking import (
    PROJECT_ROOT,
    BestCheckpointLogger,
    MetricsLogger,
    Tracker,
    active,
    connect,
    default_tracking_uri,
    flatten,
)
from zkynet import checkpoint
from zkynet.data import DatasetFileError, DatasetNotFoundError
from zkynet.training import BestCheckpoint, Callback, Checkpointer, EarlyStopping, NanGuard, ProgressReport, Trainer

__all__ = ["RunResult", "run"]

NOT_PARAMS = ("launch", "output_dir", "run_name")  # how the run was started and named, not what it trains
WATCHERS = (ProgressReport, NanGuard, Checkpointer, EarlyStopping, BestCheckpoint)  # read the epoch's whole record


def run(
    cfg, callbacks=(), state=None, make_trainer: Callable[..., RunTrainer] = Trainer
) -> Any:  # a RunResult (Any: callers typed for the float run() returned before may ignore it)
    """Train as `cfg` says, tracked in MLflow unless tracking.enabled is false; returns a
    RunResult (run id, status, final metrics, the model, checkpoints). `callbacks` (a
    sweep engine's) watch the training after the configured ones; `state` (a
    Trainer.state_dict(), e.g. another trial's, for population-based training) is
    where training starts instead of the run's own last checkpoint. `make_trainer`
    (called with Trainer's arguments, by keyword) builds the trainer: a sweep's pack
    trains the run as one member of a population."""
    cfg = _settled(cfg)
    uri = cfg.tracking.uri or default_tracking_uri()
    client = connect(uri) if cfg.tracking.enabled else None
    if client is not None:
        ownership.end_abandoned_runs(client, uri)
    continued = None
    try:
        task, continued = _checked(cfg, client, uri)
        dataset = build.dataset(continued.cfg, task)  # a missing or unreadable file stops here
        continued.cfg = build.with_data_shapes(continued.cfg, dataset)
        schema.check_references(continued.cfg)
        build.check_finite(dataset)
        model = build.model(continued.cfg)  # built before any MLflow run: what they refuse is a ConfigError
        graph = build.check_fit(model, task, dataset, continued.cfg)
        optimizer = build.optimizer(continued.cfg, build.steps(continued.cfg, dataset))
    except BaseException as e:
        if continued is not None and continued.claim is not None:
            continued.claim.release()  # refused: nobody trains it
        refused = isinstance(e, (ConfigError, DatasetNotFoundError, DatasetFileError))
        if refused and client is not None and cfg.launch.sweep_run_id is not None:
            _record_refused_trial(client, cfg, e)  # a sweep's trial is never lost, even one refused
        raise
    cfg = continued.cfg
    if state is not None:
        continued.state = state

    with Run(cfg, uri) as current:
        tracker = None
        if client is not None:
            source = cfg.launch.get("source") or lineage.source_tags(PROJECT_ROOT)  # a sweep's: found once
            tags = {lineage.OVERRIDES: " ".join(cfg.launch.overrides), **source, **_setup_tags(cfg, model, dataset)}
            tags.update(cfg.launch.get("tags") or {})  # a sweep engine's (where a new trial runs)
            if cfg.launch.trial is not None:
                tags[lineage.SWEEP_JOB] = str(cfg.launch.trial)
            tracker = current.track(
                claim=continued.claim,
                experiment=cfg.tracking.experiment,
                run_name=cfg.run_name,
                run_id=continued.run_id,
                parent_run_id=cfg.launch.sweep_run_id,
                tags=tags,
                client=client,
                system_metrics=cfg.tracking.system_metrics,
            )
            if continued.run_id is None:
                _log_config(tracker, cfg)
                if cfg.launch.sweep_run_id is not None:
                    lineage.tag_source(client, cfg.launch.sweep_run_id, PROJECT_ROOT)
            else:
                tracker.set_tags({lineage.ATTEMPTS: continued.attempt})
        callbacks = _ordered(cfg, build.callbacks(cfg), list(callbacks), tracker, task, current)
        trainer = current.trainer = make_trainer(
            model=model,
            loss=task.loss,
            optimizer=optimizer,
            dataset=dataset,
            epochs=cfg.trainer.epochs,
            batch_size=cfg.trainer.batch_size,
            metrics=task.metrics,
            seed=cfg.seed,
            eval_batch_size=cfg.trainer.eval_batch_size,
            jit=cfg.trainer.jit,
            callbacks=callbacks,
            devices=cfg.trainer.devices,
            precision=build.step_precision(cfg),
        )
        current.checkpointer = next((c for c in callbacks if isinstance(c, Checkpointer)), None)
        if continued.best is not None:  # the best epoch so far stays the best until a better one comes
            for watcher in (c for c in callbacks if isinstance(c, BestCheckpoint)):
                checkpoint.save(watcher.path, continued.best)
        if continued.state is not None:
            trainer.load_state_dict(continued.state)
            current.start_step = trainer.step
            _say_where_it_continues(continued, trainer, cfg)
        if tracker is not None and continued.run_id is None:
            _log_setup(tracker, cfg, model, task, dataset, graph)
        with _active(tracker):
            with current.training():
                trainer.fit()
            result, current.model_line = Ending(
                cfg, task, dataset, model, trainer, tracker, continued.run_id is not None
            ).complete(current.trained or continued.state is None)
    return result


def _active(tracker):
    """MLflow's active run is the run's own while it trains and ends (mlflow.log_metric in a callback)."""
    return active(tracker) if tracker is not None else nullcontext()


def _ordered(cfg, configured, extra, tracker, task, current):
    """The run's callbacks, in the order they see each hook: the tracker's logger, yours
    (what they add to the epoch's record is then logged, checkpointed and can be
    monitored), the logger's tail (what they added), the objective check, the standard watchers (progress, NaN guard,
    early stopping and the best checkpoint, then the last checkpoint, which holds what
    they decided), a sweep engine's, and last the signal check (stops at a held
    Ctrl-C/SIGTERM once every other callback has seen the step). A monitor (early
    stopping) without a best checkpoint gets one: the run's model is the best epoch's."""
    yours = [c for c in configured if not isinstance(c, WATCHERS)]
    watchers: list[Callback] = sorted((c for c in configured if isinstance(c, WATCHERS)), key=_rank)
    stopping = next((c for c in watchers if isinstance(c, EarlyStopping)), None)
    if stopping is not None and not any(isinstance(c, BestCheckpoint) for c in watchers):
        path = Path(cfg.output_dir) / lineage.BEST_CHECKPOINT
        watchers.insert(
            watchers.index(stopping) + 1, BestCheckpoint(path, stopping.monitor, stopping.mode, stopping.min_delta)
        )
    if tracker is not None:
        for best in [c for c in watchers if isinstance(c, BestCheckpoint)]:
            watchers.insert(watchers.index(best) + 1, BestCheckpointLogger(tracker, best))
    if tracker is None:
        return [*yours, ObjectiveCheck(task.objective), *watchers, *extra, current.signal_check]
    logger = MetricsLogger(tracker, cfg.trainer.log_every_n_steps)  # first and after yours: MetricsLogger says why
    return [logger, *yours, logger.tail(), ObjectiveCheck(task.objective), *watchers, *extra, current.signal_check]


def _rank(callback):
    """Progress and the NaN guard, then the monitors, then the last checkpoint (which keeps their state)."""
    return (
        2 if isinstance(callback, Checkpointer) else 1 if isinstance(callback, (EarlyStopping, BestCheckpoint)) else 0
    )


def complete_results(run_id, uri):
    """What run `run_id` left for later (a sweep's trial, launch.deferred): its curves,
    samples and model (the best epoch's when a monitor chose one), drawn from its stored
    config, metrics and checkpoints, and logged into it (which ends with the status it had)."""
    client = connect(uri)
    stored, state = lineage.stored_config_and_checkpoint(client, run_id)
    state = lineage.best_checkpoint(client, run_id) or state
    if state is None:
        raise ConfigError(f"run {run_id} has no checkpoint to draw its results from")
    with tempfile.TemporaryDirectory() as folder:
        with open_dict(stored):
            stored.output_dir = folder
        task = build.task(stored)
        model, dataset = build.model(stored), build.dataset(stored, task)
        model.load_state_dict(state["params"])
        tracker = Tracker(uri, run_id=run_id, client=client)
        try:
            Ending(stored, task, dataset, model, None, tracker, True).log_results(
                lineage.epoch_history(client, run_id), model
            )
            tracker.set_tags({lineage.RESULTS: "logged"})
        finally:
            tracker.close(tracker.previous_status or "FINISHED")


def _checked(cfg, client, uri):
    """(the task, what this run continues): the checks of the configuration itself."""
    schema.check(cfg)
    task = build.task(cfg)
    artifacts.check(task.artifacts)
    if client is None and cfg.trainer.resume:
        raise ConfigError("trainer.resume continues an MLflow run: it needs tracking.enabled=true")
    continued = resume.continuation(cfg, client, uri) if client is not None else resume.Continuation(cfg)
    try:
        schema.check_references(continued.cfg)
        build.check_devices(continued.cfg)
    except BaseException:
        if continued.claim is not None:
            continued.claim.release()
        raise
    return task, continued


def _record_refused_trial(client, cfg, error):
    tracker = Tracker(
        cfg.tracking.uri,
        cfg.tracking.experiment,
        run_name=cfg.run_name,
        parent_run_id=cfg.launch.sweep_run_id,
        client=client,
        tags={
            lineage.OVERRIDES: " ".join(cfg.launch.overrides),
            lineage.SWEEP_JOB: str(cfg.launch.trial),
            lineage.ERROR: f"{type(error).__name__}: {error}",
        },
    )
    try:
        tracker.log_params(_params(cfg, resolve=True))
    except Exception:  # the refusal may be a reference that points nowhere
        tracker.log_params(_params(cfg, resolve=False))
    tracker.close("FAILED")


def _settled(cfg):
    """A copy of `cfg` with an output folder and a run name."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        if not cfg.get("output_dir"):
            stamp = datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
            cfg.output_dir = str(PROJECT_ROOT / "outputs" / stamp)
        if not cfg.get("run_name"):
            cfg.run_name = lineage.run_name(cfg.model._target_.rsplit(".", 1)[-1].lower(), cfg.dataset.name)
        for key in ("path", "test_path"):  # your data's files, wherever the run (or its resume) runs
            if key in cfg.dataset and not OmegaConf.is_missing(cfg.dataset, key):
                value = cfg.dataset[key]
                if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                    cfg.dataset[key] = str(Path(value).expanduser().absolute())
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    return cfg


def _say_where_it_continues(continued, trainer, cfg):
    done = trainer.epoch
    if continued.run_id is None:
        print(f"starting at step {trainer.step} (epoch {done + 1} of {cfg.trainer.epochs}) from the state it was given")
    elif continued.attempt > 1 and cfg.launch.trial is not None and not cfg.trainer.resume:
        print(
            f"sweep job {cfg.launch.trial}: attempt {continued.attempt}, continuing run {continued.run_id} "
            f"from step {trainer.step}"
        )
    elif done >= cfg.trainer.epochs:
        print(
            f"run {continued.run_id} already trained {done} epochs: nothing to do (pass a larger "
            f"trainer.epochs to train on)"
        )
    else:
        print(f"resuming run {continued.run_id} at step {trainer.step} (epoch {done + 1} of {cfg.trainer.epochs})")


class ObjectiveCheck(Callback):
    """Fails the run after its first epoch if the task's objective is not one of its
    metrics: a sweep ranking by a missing one would rank nothing, silently."""

    def __init__(self, objective):
        self.objective = objective

    def on_epoch_end(self, trainer, epoch, record):
        if self.objective not in record:
            known = ", ".join(k for k in record if k != "epoch")
            raise ConfigError(f"task.objective={self.objective} is not a metric of this run; it has: {known}")


def _log_config(tracker, cfg):
    """The resolved config, as params and as YAML: there even if the run fails to start."""
    tracker.log_params(_params(cfg))
    config_file = Path(cfg.output_dir) / "config.yaml"
    config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tracker.log_artifact(config_file, lineage.CONFIG.rsplit("/", 1)[0])


def _params(cfg, resolve=True):
    """The resolved config, flattened: MLflow params. Paths inside the run's own folder
    read ${output_dir}/...: a parameter differs between runs only when a setting does."""
    settings = OmegaConf.to_container(cfg, resolve=resolve, enum_to_str=True)
    assert isinstance(settings, dict)  # a run's configuration is a mapping
    flat = flatten({k: v for k, v in settings.items() if k not in NOT_PARAMS})
    folder = str(cfg.output_dir)
    return {key: value.replace(folder, "${output_dir}") for key, value in flat.items()}


def _setup_tags(cfg, model, dataset):
    """What a new run is tagged with from the start: its model, data, size (and whether a
    sweep draws its results later)."""
    return {
        lineage.MODEL: type(model).__name__,
        lineage.DATASET: dataset.name,
        lineage.PARAMETERS: str(sum(p.value.size for p in model.named_parameters().values())),
        **({lineage.RESULTS: "deferred"} if cfg.launch.get("deferred") else {}),
    }


def _log_setup(tracker, cfg, model, task, dataset, graph=None):
    """The graph pictures (a sweep's trials draw them once per architecture, titled without the trial)."""
    if not cfg.tracking.log_graph:
        return
    sample = (dataset.train.inputs, dataset.train.targets)
    folder = Path(cfg.output_dir)
    paths = [folder / lineage.GRAPH, folder / lineage.GRAPH_SVG]
    shared = cfg.launch.get("shared")
    title = cfg.run_name.split(" #")[0] if shared else cfg.run_name

    def draw(to):
        return artifacts.graph_images(model, task.loss, sample, to, title, cfg.tracking.graph_depth, graph)

    paths = artifacts.shared(Path(shared) / "graphs", _architecture(cfg), paths, draw) if shared else draw(paths)
    for path in paths:
        tracker.log_artifact(path)


def _architecture(cfg):
    """What a graph picture shows: the model (not its initial values), data, task, depth."""
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "dataset", "task")}
    parts["model"] = {k: v for k, v in build.model_spec(cfg).items() if k != "key"}
    parts["depth"], parts["precision"] = cfg.tracking.graph_depth, str(cfg.trainer.precision)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
