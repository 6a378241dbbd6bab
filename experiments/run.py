"""Train one model, tracked in MLflow: `python -m experiments.run [overrides]`.

Hydra composes conf/config.yaml with the groups model/, dataset/, optimizer/,
trainer/, tracking/ (and +experiment=...). This module only wires the config
to objects (experiments.build), the training loop (experiments.training) and
the run's tracking (experiments.tracking, experiments.callbacks).
"""
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from mlflow import MlflowClient
from omegaconf import OmegaConf

from experiments import artifacts, build, schema
from experiments.callbacks import CHECKPOINT_ARTIFACT, Checkpointer, MetricsLogger, NanGuard, ProgressBar
from experiments.tracking import Tracker, default_tracking_uri, flatten
from experiments.training import Trainer
from zkynet import checkpoint
from zkynet.data import DatasetNotFoundError

CONFIG_ARTIFACT = "config/config.yaml"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own progress is enough
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" is not news


def run(cfg, parent_run_id=None, tags=None):
    """Train as `cfg` says; returns the last epoch's `cfg.objective` metric."""
    started = time.perf_counter()
    schema.check_keys(cfg)
    uri = cfg.tracking.uri or default_tracking_uri()
    resume = cfg.trainer.resume
    if resume:
        cfg, restored = _resume_from(uri, resume, cfg)
    output_dir = _output_dir()

    dataset = build.dataset(cfg)
    model = build.model(cfg)
    loss, metrics = build.task(cfg)
    steps_per_epoch = max(1, len(dataset.train) // cfg.trainer.batch_size)
    optimizer = build.optimizer(cfg, cfg.trainer.epochs * steps_per_epoch)

    tracker = None
    if cfg.tracking.enabled:
        tracker = Tracker(uri, cfg.tracking.experiment, run_name=cfg.run_name or _run_name(cfg),
                          run_id=resume, parent_run_id=parent_run_id, tags=tags)
    callbacks = [NanGuard(cfg.trainer.log_every_n_steps)]
    if cfg.trainer.progress:
        callbacks.append(ProgressBar())
    if tracker is not None:
        callbacks.append(MetricsLogger(tracker, cfg.trainer.log_every_n_steps))
    checkpointer = Checkpointer(output_dir / "checkpoints" / "last.npz", cfg.trainer.checkpoint_every_n_epochs,
                                cfg.seed, tracker, cfg.trainer.checkpoint_min_seconds)
    callbacks.append(checkpointer)
    trainer = Trainer(model, loss, optimizer, dataset, cfg.trainer.epochs, cfg.trainer.batch_size, metrics,
                      seed=cfg.seed, eval_batch_size=cfg.trainer.eval_batch_size, jit=cfg.trainer.jit,
                      callbacks=callbacks)
    if resume:
        trainer.train_step.load_state_dict(restored)
        done = trainer.step // trainer.steps_per_epoch
        if done >= cfg.trainer.epochs:
            print(f"run {resume} already trained {done} epochs: nothing to do (pass a larger "
                  f"trainer.epochs to train on)")
        else:
            print(f"resuming run {resume} at step {trainer.step} (epoch {done + 1} of {cfg.trainer.epochs})")
    elif tracker is not None:
        _log_setup(tracker, cfg, model, loss, dataset, output_dir)

    status, error = "FAILED", None
    try:
        with _sigterm_as_interrupt():
            history = trainer.fit()
        status = "FINISHED"
        if tracker is not None and history:
            try:
                _log_results(tracker, cfg, model, dataset, history, output_dir)
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
    _summary(cfg, status, trainer, tracker, uri, output_dir, checkpointer, error, time.perf_counter() - started)
    if status == "KILLED":
        raise SystemExit(130)
    if error is not None:
        raise error
    return trainer.history[-1][cfg.objective] if trainer.history else float("nan")


RESUME_OVERRIDES = ("trainer.resume", "trainer.epochs", "trainer.progress", "trainer.log_every_n_steps",
                    "trainer.checkpoint_every_n_epochs", "trainer.checkpoint_min_seconds", "tracking.uri")


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


def _command_line_settings():
    """The keys the command line set (["trainer.epochs", "optimizer", ...]); none when
    run() is called without Hydra."""
    try:
        overrides = HydraConfig.get().overrides.task
    except ValueError:
        return []
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides]


def _log_setup(tracker, cfg, model, loss, dataset, output_dir):
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    tracker.log_params(flatten(resolved))
    config_file = output_dir / "config.yaml"
    config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tracker.log_artifact(config_file, "config")
    tracker.set_tags({"model": type(model).__name__, "dataset": dataset.name,
                      "parameters": sum(p.value.size for p in model.named_parameters().values())})
    if cfg.tracking.log_graph:
        sample = (dataset.train.inputs, dataset.train.targets)
        tracker.log_artifact(artifacts.graph_image(model, loss, sample, output_dir / "graph.png", _title(cfg),
                                                   cfg.tracking.graph_depth))


def _log_results(tracker, cfg, model, dataset, history, output_dir):
    """Learning curves, and a look at what the model makes of data it has not trained on."""
    title, task = _title(cfg), build.task_name(cfg)
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
    try:
        choices = HydraConfig.get().runtime.choices
        return f"{choices['model']}-{choices['dataset']}"
    except ValueError:
        return f"{cfg.model._target_.rsplit('.', 1)[-1].lower()}-{cfg.dataset.name}"


def _title(cfg):
    return f"{cfg.run_name or _run_name(cfg)}"


def _summary(cfg, status, trainer, tracker, uri, output_dir, checkpointer, error, seconds):
    last = trainer.history[-1] if trainer.history else {}
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
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
