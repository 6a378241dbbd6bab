"""A run's lifecycle: how it ends, whatever happens.

`with Run(...) as run:` owns the run's status, its signals, its errors and its
summary. Inside the block, SIGTERM (`kill`) interrupts like Ctrl-C; the MLflow
run is started (and claimed: experiments.ownership) with `run.track(...)` while
signals wait, so no interruption can fall between creating the MLflow run and
owning it, and during `run.training()` an interruption waits for the end of the
current step, where the run's Checkpointer saves the state it stopped at (so a
resume trains no step twice and loses none). Leaving the block ends the
run FINISHED, KILLED (an interrupt), FAILED (an exception, with the traceback
logged) or SCHEDULED (Paused: to be continued), after the last checkpoint is written, and prints the summary; the
exception, if any, goes on to the caller.
"""

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from experiments import lineage, ownership
from experiments.interrupts import raise_interrupt
from experiments.tracking import Tracker, TrackingError
from zkynet.training import Callback, Checkpointer
from zkynet.training.trainer import Record


class Paused(Exception):
    """Raised by a sweep engine's callback when its scheduler pauses a trial to go on
    later (population-based training): the run ends SCHEDULED, to be continued."""


class RunTrainer(Protocol):
    """What a run trains with: a zkynet Trainer, or a sweep's seat at a pack
    (experiments.sweep.pack), either built from Trainer's arguments by keyword."""

    @property
    def step(self) -> int: ...

    @property
    def epoch(self) -> int: ...

    @property
    def history(self) -> list[Record]: ...

    @property
    def callbacks(self) -> Sequence[Callback]: ...

    def load_state_dict(self, state: dict) -> None: ...

    def fit(self) -> list[Record]: ...


class Run:
    def __init__(self, cfg, uri):
        self.cfg, self.uri = cfg, uri
        self.tracker: Tracker | None = None
        self.trainer: RunTrainer | None = None  # set once built: its history and step go into the summary
        self.checkpointer: Checkpointer | None = None
        self.continued = False  # an existing MLflow run goes on
        self.claim = None  # this process's claim on the MLflow run (experiments.ownership)
        self.model_line: str | None = None  # which epoch the run's model is, for the summary
        self.start_step = 0
        self.status, self.error = "RUNNING", None
        self._started = time.perf_counter()
        self._signals = _Signals()

    def __enter__(self):
        self._signals.install()
        return self

    @contextmanager
    def training(self):
        """Signals wait for the end of the current step; add `signal_check` to the
        trainer's callbacks (first)."""
        with self._signals.deferred():
            yield

    @property
    def signal_check(self):
        """The callback that stops training at a held signal (put it last: every other
        callback has seen the step), saving the state first."""
        return _SignalCheck(self._signals, self._save_where_stopped)

    def _save_where_stopped(self, trainer):
        if self.checkpointer is not None and self.checkpointer.started_step != trainer.step:
            self.checkpointer.save(trainer)  # waited for when the run ends

    def track(self, claim=None, **tracker_arguments):
        """Start (or, with run_id and this process's `claim` on it, continue) the MLflow
        run; no signal can interrupt this. A new run in an SQLite store is claimed as it is
        created (elsewhere nobody can know its id yet: continuing it claims it)."""
        with self._signals.deferred():
            self.claim = claim
            self.tracker = Tracker(self.uri, **tracker_arguments)
            self.continued = tracker_arguments.get("run_id") is not None
            if self.claim is None and ownership.claims_folder(self.uri) is not None:  # its lock says it lives
                self.claim = ownership.claim(self.tracker.client, self.uri, self.tracker.run_id)
        return self.tracker

    def __exit__(self, kind, error, trace):
        with self._signals.deferred(hold_all=True):  # a second Ctrl-C must not leave the run half-ended
            try:
                interrupted = kind is not None and _interrupted(error)
                self.status = (
                    "FINISHED"
                    if kind is None
                    else "SCHEDULED"
                    if issubclass(kind, Paused)
                    else "KILLED"
                    if interrupted
                    else "FAILED"
                )
                if self.status == "FAILED":
                    self.error = error
                    self._log_error(error)
                self._finish_checkpoint()
                ended = self._end_tracking()
                if self.claim is not None:
                    self.claim.release(forget=ended)  # unended: a later process finds it abandoned, ends it
            finally:
                self._signals.restore()
                self._summary()
        if self.error is not None and self.error is not error:
            raise self.error  # ending the run failed where training had not
        if interrupted and not isinstance(error, KeyboardInterrupt):
            raise KeyboardInterrupt(str(error)) from error
        return False

    @property
    def trained(self):
        """Whether this process trained any step."""
        return self.trainer is not None and self.trainer.step > self.start_step

    def _finish_checkpoint(self):
        if self.checkpointer is None:
            return
        try:
            self.checkpointer.wait()  # a checkpoint being written is finished, whatever happened
        except Exception as e:
            self._fail(e)

    def _end_tracking(self):
        """End the MLflow run; whether it could be ended."""
        if self.tracker is None:
            return True
        try:
            if self.continued and not self.trained and self.status != "FINISHED":
                self.tracker.restore_status()  # a resume that failed to start changes nothing
            else:
                self.tracker.close(self.status)
        except TrackingError as e:
            self._fail(e)
            return self.tracker.ended
        except Exception as e:  # the store itself failing: never a run left RUNNING by a bug of ours unsaid
            self._fail(TrackingError(f"could not end run {self.tracker.run_id} in {self.uri}: {type(e).__name__}: {e}"))
            return False
        return True

    def _fail(self, error):
        self.status = "FAILED"
        self.error = self.error or error

    def _log_error(self, error):
        """The error's last line as a tag and its traceback as error.txt, each where the
        store still takes it (the store itself may be what failed)."""
        text = "".join(traceback.format_exception(error))
        path = Path(self.cfg.output_dir) / lineage.ERROR_FILE
        try:
            path.write_text(text)
        except OSError as e:
            print(f"warning: could not write {path}: {e}", file=sys.stderr)
        if self.tracker is None:
            return
        for log in (
            lambda: self.tracker.set_tags({lineage.ERROR: text.strip().splitlines()[-1][:5000]}),
            lambda: self.tracker.log_artifact(path),
        ):
            try:
                log()
            except Exception as e:
                print(f"warning: could not log the error to MLflow: {type(e).__name__}: {e}", file=sys.stderr)

    def _summary(self):
        cfg, tracker = self.cfg, self.tracker
        history = self.trainer.history if self.trainer is not None else []
        last = history[-1] if history else {}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if str(k).startswith("val_"))
        seconds = time.perf_counter() - self._started
        lines = [
            f"\nrun {self.status} after {seconds:.1f}s"
            + (f" (epoch {last['epoch']}/{cfg.trainer.epochs}): {shown}" if last else "")
        ]
        if self.model_line is not None:
            lines.append(f"  {self.model_line}")
        if self.error is not None:
            lines.append(f"  error: {type(self.error).__name__}: {self.error}")
            lines.append(f"  (the traceback: {_shown_path(str(Path(cfg.output_dir) / lineage.ERROR_FILE))})")
        saved = self.checkpointer.saved_step if self.checkpointer is not None else None
        if saved is not None or self.status != "FINISHED":
            resume = (
                f" -> resume with trainer.resume={tracker.run_id}"
                if tracker is not None and self.status != "FINISHED" and saved is not None
                else ""
            )
            lines.append(f"  last checkpoint: {f'step {saved}' if saved is not None else 'none yet'}{resume}")
        if tracker is not None:
            lines += [
                f"  MLflow run {tracker.run_id} in experiment '{tracker.experiment}'",
                f"  look at it: mlflow ui --backend-store-uri {self.uri}",
                f"              then open {lineage.ui_url(tracker.experiment_id)}",
                f"              (this run: {lineage.ui_url(tracker.experiment_id, tracker.run_id)})",
            ]
        lines.append(f"  files: {_shown_path(cfg.output_dir)}")
        print("\n".join(lines), file=sys.stderr)


def _interrupted(error):
    """Whether `error` is, or was caused by, an interrupt (C code such as NumPy's may
    turn a KeyboardInterrupt raised inside it into another exception)."""
    seen = set()
    while error is not None and id(error) not in seen:  # a chain can loop (raise e.__cause__ from None)
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _shown_path(path):
    """`path` relative to the working directory when it lies inside it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


class _Signals:
    """SIGINT and SIGTERM raise KeyboardInterrupt at once, except inside `deferred()`:
    there the signal is held until `check()` or the end of the block raises it, at
    a point where raising is safe (an exception raised inside NumPy's or JAX's C
    code can come out as some other error). While one is held, a second signal
    raises at once (a way out of a step that hangs), except inside
    `deferred(hold_all=True)` (ending a run). Only the main thread can own signals;
    elsewhere (a worker thread of a sweep engine) this does nothing."""

    def __init__(self):
        self.previous, self.depth, self.hold_all, self.pending = None, 0, 0, None

    def install(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore(self):
        for number, handler in (self.previous or {}).items():
            signal.signal(number, handler)
        self.previous = None

    def _handle(self, number, frame):
        if self.hold_all or (self.depth and self.pending is None):
            self.pending = self.pending or number
            return
        raise_interrupt(number, frame)

    def check(self):
        """Raise the held signal, if any."""
        if self.pending is not None and self.previous is not None:
            number, self.pending = self.pending, None
            raise KeyboardInterrupt(signal.Signals(number).name)

    @contextmanager
    def deferred(self, hold_all=False):
        self.depth += 1
        self.hold_all += hold_all
        try:
            yield
        finally:
            self.depth -= 1
            self.hold_all -= hold_all
        if not self.depth:
            self.check()


class _SignalCheck(Callback):
    """Raises a held signal between steps, where training stops cleanly, once `save`
    (the run's checkpoint at this step) has been called."""

    def __init__(self, signals, save):
        self.signals, self.save = signals, save

    def _stop_if_asked(self, trainer):
        if self.signals.pending is not None:
            self.save(trainer)
            self.signals.check()

    def on_epoch_start(self, trainer, epoch):
        self._stop_if_asked(trainer)

    def on_step(self, trainer, metrics):
        self._stop_if_asked(trainer)

    def on_epoch_end(self, trainer, epoch, record):
        self._stop_if_asked(trainer)
