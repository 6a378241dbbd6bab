"""What watches a training run: a progress bar, MLflow metrics, checkpoints and a
guard against NaN/inf losses."""
import math
import sys
import threading
import time

import jax
import numpy as np
from tqdm import tqdm

from experiments.training import Callback
from zkynet import checkpoint

CHECKPOINT_ARTIFACT = "checkpoints/last.npz"


class ProgressBar(Callback):
    """One bar for the whole run (loss, accuracy, samples/s, refreshed a few times a
    second: reading a loss waits for its step) and one summary line per epoch."""

    def __init__(self, refresh_seconds=0.5):
        self.refresh_seconds = refresh_seconds
        self.bar = None

    def on_epoch_start(self, trainer, epoch):
        if self.bar is None:
            self.bar = tqdm(total=trainer.epochs * trainer.steps_per_epoch, initial=trainer.step,
                            unit="step", dynamic_ncols=True, mininterval=self.refresh_seconds)
        self.bar.set_description(f"epoch {epoch + 1}/{trainer.epochs}")
        self.started = self.last = time.perf_counter()
        self.steps = 0

    def on_step(self, trainer, metrics):
        self.bar.update(1)
        self.steps += 1
        now = time.perf_counter()
        if now - self.last >= self.refresh_seconds:
            self.last = now
            throughput = self.steps * trainer.batches.batch_size / max(now - self.started, 1e-9)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in _short(metrics).items()} |
                                 {"samples/s": f"{throughput:.0f}"})

    def on_epoch_end(self, trainer, epoch, record):
        shown = " ".join(f"{k} {v:.4g}" for k, v in _short(record).items() if k.startswith(("train_", "val_")))
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in _short(record).items() if k.startswith("val_")})
        self.bar.write(f"epoch {epoch + 1}/{trainer.epochs}: {shown} "
                       f"({record['samples_per_second']:.0f} samples/s)", file=sys.stderr)
        if epoch + 1 == trainer.epochs:
            self.bar.close()


def _short(metrics):
    return {k.replace("accuracy", "acc"): float(np.asarray(v)) for k, v in metrics.items()}


class NonFiniteLossError(FloatingPointError):
    pass


class NanGuard(Callback):
    """Stops the run (it then ends FAILED) when the loss turns NaN or infinite. Every
    `every` steps it checks the loss sampled `every` steps earlier (long finished, so
    the check never stalls the device), and it checks every epoch's means before
    any checkpoint is written."""

    def __init__(self, every):
        self.every = max(1, every)
        self.sampled = None

    def on_step(self, trainer, metrics):
        if trainer.step % self.every == 0:
            if self.sampled is not None:
                self._check(float(np.asarray(self.sampled[1])), self.sampled[0])
            self.sampled = (trainer.step, metrics["loss"])

    def on_epoch_end(self, trainer, epoch, record):
        self._check(record.get("train_loss", 0.0), trainer.step)
        self._check(record.get("val_loss", 0.0), trainer.step)

    @staticmethod
    def _check(loss, step):
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"the loss became {loss} at step {step}; the last good checkpoint "
                                     "is kept (try a lower optimizer.lr or optimizer.clip_norm)")


class MetricsLogger(Callback):
    """Per-batch metrics every `every` steps and every epoch's record, to MLflow."""

    def __init__(self, tracker, every):
        self.tracker, self.every = tracker, max(1, every)

    def on_step(self, trainer, metrics):
        if trainer.step % self.every == 0:
            self.tracker.log_metrics({f"batch_{k}": v for k, v in metrics.items()}, trainer.step)

    def on_epoch_end(self, trainer, epoch, record):
        self.tracker.log_metrics(record, trainer.step)


class Checkpointer(Callback):
    """Saves parameters, optimizer state, step and data seed to `path` and to the run
    as checkpoints/last.npz: every `every` epochs but at most once per
    `min_seconds` (fast epochs would otherwise spend their time writing files),
    and always after the last epoch. The state is copied to host memory at the
    epoch's end; a background thread writes the files while training goes on.
    `wait()` returns once the last one is stored."""

    def __init__(self, path, every, seed, tracker=None, min_seconds=0.0):
        self.path, self.every, self.seed, self.tracker = path, max(1, every), seed, tracker
        self.min_seconds, self.last_time = min_seconds, time.monotonic()
        self.saved_step = None
        self._writer, self._error = None, None

    def on_epoch_end(self, trainer, epoch, record):
        last = epoch + 1 == trainer.epochs
        due = (epoch + 1) % self.every == 0 and time.monotonic() - self.last_time >= self.min_seconds
        if not (due or last):
            return
        self.last_time = time.monotonic()
        state = jax.tree_util.tree_map(np.asarray, trainer.train_step.state_dict())
        state["meta"] = {"step": trainer.step, "epoch": epoch + 1, "seed": self.seed}
        self.wait()  # one at a time, in order
        self._writer = threading.Thread(target=self._write, args=(state,), name="checkpoint")
        self._writer.start()

    def _write(self, state):
        try:
            checkpoint.save(self.path, state)
            if self.tracker is not None:
                self.tracker.log_checkpoint(self.path, CHECKPOINT_ARTIFACT)
            self.saved_step = int(state["meta"]["step"])
        except Exception as e:  # raised by wait(), in the training thread
            self._error = e

    def wait(self):
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"saving a checkpoint failed: {error}") from error
