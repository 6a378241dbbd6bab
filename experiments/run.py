"""Train one model, tracked in MLflow: `python -m experiments.run [overrides]`.

Hydra composes conf/config.yaml with the groups model/, dataset/, optimizer/,
trainer/, tracking/ (and +experiment=...). This module only wires the config
to objects (experiments.build), the training loop (experiments.training) and
the run's tracking (experiments.tracking, experiments.callbacks).
"""
import logging
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow import MlflowClient
from omegaconf import OmegaConf

from experiments import artifacts, build, schema
from experiments.callbacks import CHECKPOINT_ARTIFACT, Checkpointer, MetricsLogger, NanGuard, ProgressBar
from experiments.sweep import pin_to_assigned_cpus, sweep_run
from experiments.tracking import Tracker, default_tracking_uri, flatten
from experiments.training import Trainer
from zkynet import checkpoint
from zkynet.data import DatasetNotFoundError

CONFIG_ARTIFACT = "config/config.yaml"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own progress is enough
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" is not news


def run(cfg):
    """Train as `cfg` says; returns the last epoch's `cfg.objective` metric."""
    started = time.perf_counter()
    schema.check_keys(cfg)
    uri = cfg.tracking.uri or default_tracking_uri()
    sweep, job = _sweep_membership(cfg, uri)
    if job is not None:
        pin_to_assigned_cpus(job)
    cfg, resume, restored = _continuation(cfg, uri, sweep, job)
    schema.check_references(cfg)
    output_dir = _output_dir()
    tracker = None
    if cfg.tracking.enabled:
        tags = None if sweep is None else {"sweep_job": str(job), "overrides": " ".join(_command_line_overrides())}
        tracker = Tracker(uri, cfg.tracking.experiment, run_name=_run_name(cfg), run_id=resume,
                          parent_run_id=sweep, tags=tags)
        tracker.set_tags({"host": socket.gethostname(), "pid": os.getpid()})
        if not cfg.trainer.resume:
            _log_config(tracker, cfg, output_dir)
    checkpointer = Checkpointer(output_dir / "checkpoints" / "last.npz", cfg.trainer.checkpoint_every_n_epochs,
                                cfg.seed, tracker, cfg.trainer.checkpoint_min_seconds)

    status, error, trainer = "FAILED", None, None
    try:
        with _sigterm_as_interrupt():
            trainer = _trainer(cfg, tracker, checkpointer, restored, resume, output_dir)
            history = trainer.fit()
        status = "FINISHED"
        if tracker is not None and history:
            try:
                _log_results(tracker, cfg, trainer.model, trainer.dataset, history, output_dir)
            except Exception as e:  # the training itself succeeded: say so, and keep it
                print(f"warning: could not log the result pictures/samples: {type(e).__name__}: {e}",
                      file=sys.stderr)
                tracker.set_tags({"artifact_error": f"{type(e).__name__}: {e}"})
    except KeyboardInterrupt:
        status = "KILLED"
    except Exception as e:
        error = e
        if tracker is not None:
            _log_error(tracker, output_dir)
    finally:
        try:
            checkpointer.wait()  # a checkpoint being written is finished, whatever happened
        finally:
            if tracker is not None:
                tracker.close(status)
    history = trainer.history if trainer is not None else []
    _summary(cfg, status, history, tracker, uri, output_dir, checkpointer, error, time.perf_counter() - started)
    if status == "KILLED":
        raise SystemExit(130)
    if error is not None:
        raise error
    return history[-1][cfg.objective] if history else float("nan")


def _trainer(cfg, tracker, checkpointer, restored, resume, output_dir):
    """The dataset, model, optimizer and loop `cfg` describes, at `restored`'s state."""
    dataset = build.dataset(cfg)
    model = build.model(cfg)
    loss, metrics = build.task(cfg)
    steps_per_epoch = max(1, len(dataset.train) // cfg.trainer.batch_size)
    optimizer = build.optimizer(cfg, cfg.trainer.epochs * steps_per_epoch)
    callbacks = [NanGuard(cfg.trainer.log_every_n_steps)]
    if cfg.trainer.progress:
        callbacks.append(ProgressBar())
    if tracker is not None:
        callbacks.append(MetricsLogger(tracker, cfg.trainer.log_every_n_steps))
    callbacks.append(checkpointer)
    trainer = Trainer(model, loss, optimizer, dataset, cfg.trainer.epochs, cfg.trainer.batch_size, metrics,
                      seed=cfg.seed, eval_batch_size=cfg.trainer.eval_batch_size, jit=cfg.trainer.jit,
                      callbacks=callbacks, devices=cfg.trainer.devices)
    if restored is not None:
        trainer.train_step.load_state_dict(restored)
        done = trainer.step // trainer.steps_per_epoch
        if done >= cfg.trainer.epochs:
            print(f"run {resume} already trained {done} epochs: nothing to do (pass a larger "
                  f"trainer.epochs to train on)")
        else:
            print(f"resuming run {resume} at step {trainer.step} (epoch {done + 1} of {cfg.trainer.epochs})")
    if tracker is not None and not cfg.trainer.resume:
        _log_setup(tracker, cfg, model, loss, dataset, output_dir)
    return trainer


def _sweep_membership(cfg, uri):
    """(the sweep's MLflow run id, this job's number) for a job of a tracked -m sweep,
    else (None, None). The sweep's run is the one tagged with the sweep's folder."""
    try:
        hydra_config = HydraConfig.get()
    except ValueError:
        return None, None
    if hydra_config.mode != RunMode.MULTIRUN or not cfg.tracking.enabled:
        return None, None
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    found = experiment and sweep_run(client, experiment.experiment_id, str(hydra_config.sweep.dir))
    return (found.info.run_id, hydra_config.job.num) if found else (None, None)


RESUME_OVERRIDES = ("trainer.resume", "trainer.epochs", "trainer.progress", "trainer.log_every_n_steps",
                    "trainer.checkpoint_every_n_epochs", "trainer.checkpoint_min_seconds", "tracking.uri")


def _continuation(cfg, uri, sweep, job):
    """(config, MLflow run to continue or None, training state to start from or None):
    `trainer.resume=<run id>` continues that run with its own configuration; a sweep
    job that Ray runs again (its worker died) continues its first attempt's run."""
    if cfg.trainer.resume:
        stored, state = _resume_from(uri, cfg.trainer.resume, cfg)
        return stored, cfg.trainer.resume, state
    earlier = _earlier_attempt(uri, sweep, job)
    if earlier is None:
        return cfg, None, None
    client = MlflowClient(uri)
    attempts = int(client.get_run(earlier).data.tags.get("attempts", "1")) + 1
    client.set_tag(earlier, "attempts", str(attempts))
    with tempfile.TemporaryDirectory() as folder:
        try:
            state = checkpoint.load(client.download_artifacts(earlier, CHECKPOINT_ARTIFACT, folder))
        except Exception:  # it died before its first checkpoint: start over, in the same run
            state = None
    print(f"sweep job {job}: attempt {attempts}, continuing run {earlier}"
          + (f" from step {int(state['meta']['step'])}" if state else " from the start"))
    return cfg, earlier, state


def _earlier_attempt(uri, sweep, job):
    """The run of an earlier, unfinished attempt at sweep job `job`, if any."""
    if sweep is None:
        return None
    client = MlflowClient(uri)
    parent = client.get_run(sweep)
    earlier = client.search_runs(
        [parent.info.experiment_id], max_results=1,
        filter_string=f"tags.mlflow.parentRunId = '{sweep}' and tags.sweep_job = '{job}' and "
                      f"attributes.status != 'FINISHED'")
    return earlier[0].info.run_id if earlier else None


def _resume_from(uri, run_id, cfg):
    """The config the run was started with (so the same model and data come back), with
    the few settings that may change on resuming (more epochs, logging), and its last
    checkpoint."""
    changes = _command_line_settings()
    refused = [key for key in changes if key not in RESUME_OVERRIDES]
    if refused:
        raise build.ConfigError(f"trainer.resume continues run {run_id} with its own configuration; on the "
                                f"command line only {', '.join(RESUME_OVERRIDES[1:])} may change, not: "
                                f"{', '.join(refused)}")
    client = MlflowClient(uri)
    try:
        client.get_run(run_id)
    except Exception as e:
        raise build.ConfigError(f"trainer.resume={run_id}: no such MLflow run in {uri}") from e
    with tempfile.TemporaryDirectory() as folder:
        try:
            config_file = client.download_artifacts(run_id, CONFIG_ARTIFACT, folder)
            checkpoint_file = client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, folder)
        except Exception as e:
            raise build.ConfigError(f"run {run_id} has no checkpoint to resume from (it saves one "
                                    "every trainer.checkpoint_every_n_epochs epochs)") from e
        stored = OmegaConf.load(config_file)
        state = checkpoint.load(checkpoint_file)
    for key in {"trainer.resume", *changes}:
        OmegaConf.update(stored, key, OmegaConf.select(cfg, key), force_add=True)
    return stored, state


def _command_line_overrides():
    """This job's overrides (["trainer.epochs=3", "model=cnn", ...]); none without Hydra."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def _command_line_settings():
    """The keys the command line set (["trainer.epochs", "model", ...])."""
    return [o.split("=", 1)[0].lstrip("+~") for o in _command_line_overrides()]


def _log_config(tracker, cfg, output_dir):
    """The resolved config, as params and as YAML: there even if the run fails to start."""
    tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
    config_file = output_dir / "config.yaml"
    config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tracker.log_artifact(config_file, "config")


def _log_setup(tracker, cfg, model, loss, dataset, output_dir):
    tracker.set_tags({"model": type(model).__name__, "dataset": dataset.name,
                      "parameters": sum(p.value.size for p in model.named_parameters().values())})
    if cfg.tracking.log_graph:
        sample = (dataset.train.inputs, dataset.train.targets)
        tracker.log_artifact(artifacts.graph_image(model, loss, sample, output_dir / "graph.png", _run_name(cfg),
                                                   cfg.tracking.graph_depth))


def _log_results(tracker, cfg, model, dataset, history, output_dir):
    """Learning curves, and a look at what the model makes of data it has not trained on."""
    title, task = _run_name(cfg), build.task_name(cfg)
    tracker.log_artifact(artifacts.curves_image(history, output_dir / "curves.png", title))
    tokenizer = dataset.info.get("tokenizer")
    if tokenizer is not None:  # saved with the model: ids mean nothing without it
        (output_dir / "tokenizer.json").write_text(tokenizer.to_json())
        tracker.log_artifact(output_dir / "tokenizer.json")
        if task == "language_model":
            prompt = dataset.validation.inputs[0][:64]
            tracker.log_artifact(artifacts.text_sample(model, tokenizer, prompt, output_dir / "samples.txt",
                                                       seed=cfg.seed))
    shape = cfg.dataset.get("image_shape")
    if task == "vae" and shape:
        samples = model.sample(20, cfg.seed)
        tracker.log_artifact(artifacts.image_grid([samples[:10], samples[10:]], shape, output_dir / "samples.png",
                                                  f"{title}: decoded from z ~ N(0, I)"))
    elif task == "reconstruction" and shape:
        tracker.log_artifact(artifacts.reconstructions(model, dataset.validation.inputs, shape,
                                                       output_dir / "reconstructions.png", title))


def _log_error(tracker, output_dir):
    trace = traceback.format_exc()
    error_file = output_dir / "error.txt"
    error_file.write_text(trace)
    tracker.log_artifact(error_file)
    tracker.set_tags({"error": trace.strip().splitlines()[-1][:5000]})


@contextmanager
def _sigterm_as_interrupt():
    """`kill` (SIGTERM) ends the run like Ctrl-C: status KILLED, checkpoint kept."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _output_dir():
    try:
        path = Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # called without Hydra (tests, notebooks)
        path = Path(tempfile.mkdtemp(prefix="zkynet-run-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_name(cfg):
    """`run_name`, or model-dataset as chosen on the command line."""
    if cfg.run_name:
        return cfg.run_name
    try:
        choices = HydraConfig.get().runtime.choices
        return f"{choices['model']}-{choices['dataset']}"
    except ValueError:
        return f"{cfg.model._target_.rsplit('.', 1)[-1].lower()}-{cfg.dataset.name}"


def _summary(cfg, status, history, tracker, uri, output_dir, checkpointer, error, seconds):
    last = history[-1] if history else {}
    shown = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k.startswith("val_"))
    print(f"\nrun {status} after {seconds:.1f}s" + (f" (epoch {last['epoch']}/{cfg.trainer.epochs}): {shown}"
                                                      if last else ""), file=sys.stderr)
    if error is not None:
        print(f"  error: {type(error).__name__}: {error}", file=sys.stderr)
    if checkpointer.saved_step is not None or status != "FINISHED":
        kept = f"step {checkpointer.saved_step}" if checkpointer.saved_step is not None else "none yet"
        print(f"  last checkpoint: {kept}" + (f" -> resume with trainer.resume={tracker.run_id}"
                                               if tracker and status != "FINISHED" and checkpointer.saved_step
                                               else ""), file=sys.stderr)
    if tracker is not None:
        print(f"  MLflow run {tracker.run_id} in experiment '{cfg.tracking.experiment}'\n"
              f"  look at it: mlflow ui --backend-store-uri {uri}\n"
              f"              then open http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs/"
              f"{tracker.run_id}", file=sys.stderr)
    print(f"  files: {os.path.relpath(output_dir)}", file=sys.stderr)


schema.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg):
    try:
        return run(cfg)
    except (build.ConfigError, DatasetNotFoundError) as e:  # the user's to fix: no traceback
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return float("nan")  # recorded as a FAILED child run; the sweep goes on and fails at the end
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return float("nan")
        raise


if __name__ == "__main__":
    main()
