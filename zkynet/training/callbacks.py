"""The standard callbacks: a progress report, a guard against NaN/inf losses,
checkpoints (the last and the best), and early stopping."""

from __future__ import annotations

import math
import shutil
import sys
import threading
import time
from typing import Any

import jax
import numpy as np

from zkynet import checkpoint
from zkynet.training.trainer import Callback, TrainingLoop


class ProgressReport(Callback):
    """One plain line per epoch (train and validation metrics, throughput), and with
    `bar`, a live progress line between them when the stream is a terminal (a log
    file gets only the epoch lines). `prefix` starts every line (a sweep's trial)."""

    def __init__(self, bar: bool = True, prefix: str = "", refresh_seconds: float = 0.5, stream=None):
        self.stream = stream or sys.stderr
        self.bar = bar and self.stream.isatty()
        self.prefix, self.refresh_seconds = prefix, refresh_seconds
        self._shown = False

    def on_epoch_start(self, trainer, epoch):
        self.started = self.last = time.perf_counter()
        self.steps = 0

    def on_step(self, trainer, metrics):
        self.steps += 1
        now = time.perf_counter()
        if self.bar and now - self.last >= self.refresh_seconds:  # reading a loss waits for its step
            self.last = now
            done = trainer.step % trainer.steps_per_epoch or trainer.steps_per_epoch
            throughput = self.steps * trainer.batches.batch_size / max(now - self.started, 1e-9)
            width = shutil.get_terminal_size().columns - 1
            text = (
                f"{self.prefix}epoch {trainer.epoch + 1}/{trainer.epochs} {done}/{trainer.steps_per_epoch} "
                f"{_shown(metrics)} {throughput:.0f} samples/s"
            )
            self.stream.write("\r" + text[:width].ljust(width))
            self.stream.flush()
            self._shown = True

    def on_epoch_end(self, trainer, epoch, record):
        if self._shown:
            self.stream.write("\r" + " " * (shutil.get_terminal_size().columns - 1) + "\r")
            self._shown = False
        self.stream.write(f"{self.prefix}{epoch_line(record, trainer.epochs)}\n")
        self.stream.flush()


def epoch_line(record, epochs):
    """`epoch 3/20: train_acc 0.91 train_loss 0.3 val_acc 0.9 val_loss 0.33 (61234 samples/s)`"""
    metrics = {k: v for k, v in record.items() if k.startswith(("train_", "val_"))}
    return f"epoch {record['epoch']}/{epochs}: {_shown(metrics)} ({record.get('samples_per_second', 0):.0f} samples/s)"


def _shown(metrics):
    return " ".join(f"{k.replace('accuracy', 'acc')} {float(np.asarray(v)):.4g}" for k, v in metrics.items())


class NonFiniteLossError(FloatingPointError):
    pass


class NanGuard(Callback):
    """Stops training (with NonFiniteLossError) when the loss turns NaN or infinite.
    Every `every` steps it checks the loss sampled `every` steps earlier (long
    finished, so the check never stalls the device), and it checks every epoch's
    means before any later callback (a checkpoint) sees the epoch."""

    def __init__(self, every: int = 10):
        self.every = max(1, every)
        self.sampled: tuple[int, Any] | None = None  # (step, its loss on the device)

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
            raise NonFiniteLossError(
                f"the loss became {loss} at step {step}; the last good checkpoint "
                "is kept (try a lower learning rate or gradient clipping; if the data may "
                "be at fault, such as a label >= the number of classes or a token id "
                "beyond the vocabulary, which read NaN under jit, run that batch eagerly "
                "with TrainStep(..., jit=False) to have it named)"
            )


class Checkpointer(Callback):
    """Saves the trainer's state (parameters, optimizer state, step, epoch, seed) to
    `path`: after the first epoch, then every `every_n_epochs` epochs but at most once
    per `min_seconds` (fast epochs would otherwise spend their time writing files), and
    always after the end of training (written before fit() returns); `save(trainer)`
    at any step boundary (an interrupted run saves where it stopped: the state then
    holds the epoch's steps so far). Put it after the callbacks whose epoch-end work it
    should cover.

    The state is copied to host memory at the epoch's end and written, atomically,
    by a background thread while training goes on; then every callback's
    `on_checkpoint` runs in that thread. `wait()` returns once the last one is
    complete, and raises if writing it failed."""

    def __init__(self, path, every_n_epochs: int = 1, min_seconds: float = 0.0):
        self.path, self.every, self.min_seconds = path, max(1, every_n_epochs), min_seconds
        self.last_time: float | None = None  # when the last save started (None: not yet in this process)
        self.saved_step: int | None = None  # the step of the last checkpoint completed
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started_step: int | None = None

    def on_epoch_end(self, trainer, epoch, record):
        first = self.last_time is None  # this process's first epoch: kill -9 loses at most one epoch
        waited = first or time.monotonic() - (self.last_time or 0.0) >= self.min_seconds
        if first or ((epoch + 1) % self.every == 0 and waited):
            self.save(trainer)

    @property
    def started_step(self) -> int | None:
        """The step of the last save started (written or being written), None if none."""
        return self._started_step

    def on_fit_end(self, trainer):
        """The last state is on disk when fit() returns."""
        if trainer.history and self._started_step != trainer.step:  # trained since the last save
            self.save(trainer)
        self.wait()

    def save(self, trainer: TrainingLoop) -> None:
        """Write the trainer's current state now (in the background)."""
        self.last_time, self._started_step = time.monotonic(), trainer.step
        state = jax.tree_util.tree_map(np.asarray, trainer.state_dict())
        self.wait()  # one at a time, in order
        self._writer = threading.Thread(target=self._write, args=(trainer, state), name="checkpoint")
        self._writer.start()

    def _write(self, trainer, state):
        try:
            checkpoint.save(self.path, state)
            for callback in trainer.callbacks:
                callback.on_checkpoint(trainer, self.path, state["meta"])
            self.saved_step = int(state["meta"]["step"])
        except BaseException as e:  # raised by wait(), in the training thread
            self._error = e

    def wait(self) -> None:
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"saving the checkpoint {self.path} failed: {error}") from error


class _Monitor:
    """A metric of the epoch records and which way is better (`mode` "min" or "max"),
    improving only by more than `min_delta`."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None

    def state_dict(self) -> dict:
        """The best value and epoch so far (kept in checkpoints: a resumed run compares
        its epochs with the epochs before the interruption too)."""
        if self.best is None:
            return {}
        return {"best": np.float64(self.best), "best_epoch": np.int64(self.best_epoch or 0)}

    def load_state_dict(self, state: dict) -> None:
        if "best" in state:
            self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])

    def improved(self, record) -> bool:
        """Whether this epoch's record is the best so far (then it is remembered)."""
        if self.monitor not in record:
            known = ", ".join(k for k in record if k != "epoch")
            raise ValueError(
                f"{type(self).__name__}: monitor={self.monitor!r} is not a metric of this run; it has: {known}"
            )
        value = float(record[self.monitor])
        better = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if better:
            self.best, self.best_epoch = value, record["epoch"]
        return better


class EarlyStopping(_Monitor, Callback):
    """Stops training once `monitor` has not improved by more than `min_delta` for
    `patience` epochs in a row. `stopped_epoch` is the last epoch trained when it
    stopped (None: it never did), `best_epoch` the best one."""

    def __init__(self, monitor: str = "val_loss", mode: str = "min", patience: int = 3, min_delta: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.patience, self.waited = patience, 0
        self.stopped_epoch: int | None = None

    def state_dict(self) -> dict:
        state = super().state_dict()
        return {**state, "waited": np.int64(self.waited)} if state else {}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.waited = int(state.get("waited", 0))

    def on_epoch_end(self, trainer, epoch, record):
        self.waited = 0 if self.improved(record) else self.waited + 1
        if self.waited >= self.patience:
            trainer.should_stop = True
            self.stopped_epoch = record["epoch"]


class BestCheckpoint(_Monitor, Callback):
    """Saves the trainer's state to `path` after every epoch whose `monitor` is the best
    so far (in `mode`, by more than `min_delta`); `best_epoch` and `best` say which.
    Written at once (best epochs are rare after the first few), atomically."""

    def __init__(self, path, monitor: str = "val_loss", mode: str = "min", min_delta: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        self.path = path

    def on_epoch_end(self, trainer, epoch, record):
        if self.improved(record):
            checkpoint.save(self.path, jax.tree_util.tree_map(np.asarray, trainer.state_dict()))
