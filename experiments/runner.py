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
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
from omegaconf import OmegaConf, open_dict

from experiments import artifacts, build, lineage, resume, schema
from experiments.lifecycle import Run, RunTrainer
from experiments.schema import ConfigError
from experiments.tracking import PROJECT_ROOT, MetricsLogger, Tracker, connect, default_tracking_uri, flatten
from zkynet import saved_model
from zkynet.data import DatasetFileError, DatasetNotFoundError
from zkynet.training import BestCheckpoint, Callback, Checkpointer, EarlyStopping, Trainer

NOT_PARAMS = ("launch", "output_dir")  # how the run was started, not what it trains


def run(cfg, callbacks=(), state=None, make_trainer: Callable[..., RunTrainer] = Trainer):
    """Train as `cfg` says, tracked in MLflow unless tracking.enabled is false; returns
    the last epoch's value of the task's objective (NaN if no epoch ran). `callbacks`
    (a sweep engine's) watch the training after the configured ones; `state` (a
    Trainer.state_dict(), e.g. another trial's, for population-based training) is
    where training starts instead of the run's own last checkpoint. `make_trainer`
    (called with Trainer's arguments, by keyword) builds the trainer: a sweep's pack
    trains the run as one member of a population."""
    cfg = _settled(cfg)
    uri = cfg.tracking.uri or default_tracking_uri()
    client = connect(uri) if cfg.tracking.enabled else None
    try:
        task, continued = _checked(cfg, client)
        model = build.model(continued.cfg)  # built before any MLflow run: what they refuse is a ConfigError
        dataset = build.dataset(continued.cfg, task)  # a missing or unreadable download stops here too
        optimizer = build.optimizer(continued.cfg, build.steps(continued.cfg, dataset))
    except (ConfigError, DatasetNotFoundError, DatasetFileError) as e:
        if client is not None and cfg.launch.sweep_run_id is not None:
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
            else:
                tracker.set_tags({lineage.ATTEMPTS: continued.attempt})
        callbacks = build.callbacks(cfg) + list(callbacks)
        callbacks.insert(0, ObjectiveCheck(task.objective))
        callbacks.insert(0, current.signal_check)
        if tracker is not None:  # first: the metrics of an epoch are queued before a checkpoint covers them
            callbacks.insert(0, MetricsLogger(tracker, cfg.trainer.log_every_n_steps))
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
        if continued.state is not None:
            trainer.load_state_dict(continued.state)
            current.start_step = trainer.step
            _say_where_it_continues(continued, trainer, cfg)
        if tracker is not None and continued.run_id is None:
            _log_setup(tracker, cfg, model, task, dataset)
        with current.training():
            history = trainer.fit()
        if tracker is not None and history:
            _log_monitored(tracker, trainer)
            if not cfg.launch.get("deferred"):  # a sweep's trial: drawn for the best one when the sweep ends
                _log_results(tracker, cfg, model, task, dataset, history)
                if cfg.tracking.log_model:
                    _log_model(tracker, cfg, model, dataset)
    return history[-1][task.objective] if history else float("nan")


def complete_results(run_id, uri):
    """What run `run_id` left for later (a sweep's trial, launch.deferred): its curves,
    samples and model, drawn from its stored config, metrics and last checkpoint, and
    logged into it (which ends with the status it had)."""
    client = connect(uri)
    stored, state = lineage.stored_config_and_checkpoint(client, run_id)
    if state is None:
        raise ConfigError(f"run {run_id} has no checkpoint to draw its results from")
    with tempfile.TemporaryDirectory() as folder:
        with open_dict(stored):
            stored.output_dir = folder
        task = build.task(stored)
        model, dataset = build.model(stored), build.dataset(stored, task)
        for name, p in model.named_parameters().items():
            p.value = jnp.asarray(state["params"][name], p.value.dtype)
        history = _stored_history(client, run_id)
        tracker = Tracker(uri, run_id=run_id, client=client)
        try:
            _log_results(tracker, stored, model, task, dataset, history)
            if stored.tracking.log_model:
                _log_model(tracker, stored, model, dataset)
            tracker.set_tags({lineage.RESULTS: "logged"})
        finally:
            tracker.close(tracker.previous_status or "FINISHED")


def _stored_history(client, run_id):
    """A run's epoch records ({"epoch": n, "train_...": ..., "val_...": ...}) from its metrics."""
    records = {m.step: {"epoch": int(m.value)} for m in client.get_metric_history(run_id, "epoch")}
    for key in client.get_run(run_id).data.metrics:
        if key.startswith(("train_", "val_")):
            for m in client.get_metric_history(run_id, key):
                if m.step in records:
                    records[m.step][key] = m.value
    return [records[step] for step in sorted(records)]


def _checked(cfg, client):
    """(the task, what this run continues): the checks of the configuration itself."""
    schema.check(cfg)
    task = build.task(cfg)
    artifacts.check(task.artifacts)
    if client is None and cfg.trainer.resume:
        raise ConfigError("trainer.resume continues an MLflow run: it needs tracking.enabled=true")
    continued = resume.continuation(cfg, client) if client is not None else resume.Continuation(cfg)
    schema.check_references(continued.cfg)
    build.check_devices(continued.cfg)
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
    settings = OmegaConf.to_container(cfg, resolve=resolve, enum_to_str=True)
    assert isinstance(settings, dict)  # a run's configuration is a mapping
    return flatten({k: v for k, v in settings.items() if k not in NOT_PARAMS})


def _setup_tags(cfg, model, dataset):
    """What a new run is tagged with from the start: its model, data, size (and whether a
    sweep draws its results later)."""
    return {
        lineage.MODEL: type(model).__name__,
        lineage.DATASET: dataset.name,
        lineage.PARAMETERS: str(sum(p.value.size for p in model.named_parameters().values())),
        **({lineage.RESULTS: "deferred"} if cfg.launch.get("deferred") else {}),
    }


def _log_setup(tracker, cfg, model, task, dataset):
    if cfg.tracking.log_graph:
        sample = (dataset.train.inputs, dataset.train.targets)
        folder = Path(cfg.output_dir)
        paths = [folder / lineage.GRAPH, folder / lineage.GRAPH_SVG]
        if cfg.launch.get("shared"):  # a sweep's trials: drawn once per architecture, titled without the trial
            title = cfg.run_name.split(" #")[0]
            draw = lambda to: artifacts.graph_images(model, task.loss, sample, to, title, cfg.tracking.graph_depth)  # noqa: E731
            paths = artifacts.shared(Path(cfg.launch.shared) / "graphs", _architecture(cfg), paths, draw)
        else:
            paths = artifacts.graph_images(model, task.loss, sample, paths, cfg.run_name, cfg.tracking.graph_depth)
        for path in paths:
            tracker.log_artifact(path)


def _architecture(cfg):
    """What a graph picture shows: the model (not its initial values), data, task, depth."""
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "dataset", "task")}
    parts["model"] = {k: v for k, v in build.model_spec(cfg).items() if k != "key"}
    parts["depth"], parts["precision"] = cfg.tracking.graph_depth, str(cfg.trainer.precision)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _log_monitored(tracker, trainer):
    """What early stopping and a best checkpoint decided: when training stopped (tags
    stopped_early, stopped_at_epoch), which epoch was best (tag best_epoch, metric
    best_<monitor>; the best checkpoint's when there is one), the best checkpoint."""
    watchers = [c for c in trainer.callbacks if isinstance(c, (BestCheckpoint, EarlyStopping)) and c.best is not None]
    for callback in watchers:
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch is not None:
            tracker.set_tags({lineage.STOPPED_EARLY: "true", lineage.STOPPED_AT_EPOCH: callback.stopped_epoch})
            print(
                f"early stopping: {callback.monitor} did not improve for {callback.patience} epochs; stopped "
                f"after epoch {callback.stopped_epoch} (best: epoch {callback.best_epoch})",
                file=sys.stderr,
            )
        if isinstance(callback, BestCheckpoint):
            tracker.log_checkpoint(callback.path, lineage.BEST_CHECKPOINT)
    if watchers:
        best = next((c for c in watchers if isinstance(c, BestCheckpoint)), watchers[0])
        tracker.set_tags({lineage.BEST_EPOCH: best.best_epoch})
        tracker.log_metrics({f"best_{best.monitor}": best.best}, trainer.step)


def _log_results(tracker, cfg, model, task, dataset, history):
    """Learning curves, the tokenizer, and the looks at the model the task asks for. The
    training itself succeeded: a picture that cannot be drawn is a warning, not a failure."""
    folder = Path(cfg.output_dir)
    try:
        tracker.log_artifact(artifacts.curves_image(history, folder / lineage.CURVES, cfg.run_name))
        tokenizer = dataset.info.get("tokenizer")
        if tokenizer is not None:  # saved with the model: ids mean nothing without it
            (folder / "tokenizer.json").write_text(tokenizer.to_json())
            tracker.log_artifact(folder / "tokenizer.json")
        for path in artifacts.samples(
            task.artifacts, model, dataset, folder, cfg.run_name, cfg.seed, cfg.dataset.get("image_shape")
        ):
            tracker.log_artifact(path)
    except Exception as e:
        print(f"warning: could not log the result pictures/samples: {type(e).__name__}: {e}", file=sys.stderr)
        tracker.set_tags({lineage.ARTIFACT_ERROR: f"{type(e).__name__}: {e}"})


def _log_model(tracker, cfg, model, dataset):
    """The trained model as the run's MLflow model, saved first as a zkynet folder and
    loaded back from it for the signature's outputs (what serving will answer)."""
    example = dataset.validation.inputs[:2]
    try:
        folder = saved_model.save(
            model,
            Path(cfg.output_dir) / lineage.MODEL_ARTIFACT,
            build.model_spec(cfg),
            example,
            OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            dataset.info.get("tokenizer"),
        )
        trusted = saved_model.targets(build.model_spec(cfg))  # the classes this run itself built
        output = saved_model.Predictor(folder, trusted).predict(example)
        tracker.log_model(folder, example, output, cfg.tracking.registered_model)
    except Exception as e:
        print(f"warning: could not log the model: {type(e).__name__}: {e}", file=sys.stderr)
        tracker.set_tags({lineage.ARTIFACT_ERROR: f"model: {type(e).__name__}: {e}"})
