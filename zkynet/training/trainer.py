"""The training loop: epochs of compiled steps over shuffled batches, validation
after each epoch, and hooks (callbacks) for whoever watches: a progress report,
a NaN guard, checkpoints, an experiment tracker, a sweep scheduler."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np

from zkynet.data import Batches, Dataset
from zkynet.framework.compile import EvalStep, TrainStep
from zkynet.framework.parallel import DataParallel
from zkynet.optim import Optimizer

Record = dict  # one epoch's record: {"epoch": n, "train_loss": ..., "val_accuracy": ..., ...}


class TrainingLoop(Protocol):
    """What a callback's hooks receive as `trainer`: a Trainer, or one member of a
    PopulationTrainer (zkynet.training.population.Member), which offers the same for
    that member alone. A callback reads these, may set `should_stop`, and may save
    `state_dict()`."""

    should_stop: bool  # set to True: training ends after the current epoch

    @property
    def step(self) -> int:
        """Optimizer steps taken."""
        ...

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        ...

    @property
    def epochs(self) -> int:
        """Epochs to train in all."""
        ...

    @property
    def steps_per_epoch(self) -> int: ...

    @property
    def batches(self) -> Batches:
        """The training batches (their batch_size)."""
        ...

    @property
    def history(self) -> list[Record]:
        """The records of the epochs trained so far by this fit()."""
        ...

    @property
    def callbacks(self) -> Sequence[Callback]: ...

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (what a checkpoint holds)."""
        ...


class MetricError(ValueError):
    """A metric a callback logged is not a name (a non-empty string) with a finite
    number; the message names the callback and the metric."""


def checked_metric(name: Any, value: Any, where: str, allow_nonfinite: bool = False) -> float:
    """`value` as a float, once sure that `name` names a metric and `value` is one (a
    finite real number: a Python, NumPy or JAX scalar; NaN or inf only with
    `allow_nonfinite`); else MetricError naming `where` (the callback) and the metric."""
    if not isinstance(name, str) or not name.strip():
        raise MetricError(f"{where}: a metric's name must be a non-empty string, got {name!r} (value {value!r})")
    array = np.asarray(value) if not isinstance(value, (str, bytes)) else np.asarray(None)
    if array.dtype.kind not in "biuf" or array.size != 1:
        shown = f"an array shaped {array.shape}" if array.dtype.kind in "biufc" else repr(value)[:80]
        raise MetricError(f"{where}: metric {name!r} must be one real number, got {shown}")
    number = float(array.reshape(()))
    if not math.isfinite(number) and not allow_nonfinite:
        raise MetricError(
            f"{where}: metric {name!r} is {number}; a NaN or infinite value is refused unless logged on "
            f"purpose: trainer.log({name!r}, value, allow_nonfinite=True)"
        )
    return number


class Callback:
    """Hooks the loop calls, in the order the callbacks were given; override what you
    need. Setting `trainer.should_stop = True` ends training after the current epoch
    (early stopping); raising from a hook ends it at once.

    Your own metrics: add them to the epoch's `record` in `on_epoch_end` (a name and a
    finite number), or call `trainer.log(name, value)` from any hook for a value at the
    current step; callbacks after yours see them (`on_log` for the latter)."""

    def on_fit_start(self, trainer: TrainingLoop) -> None:
        pass

    def on_epoch_start(self, trainer: TrainingLoop, epoch: int) -> None:
        pass

    def on_step(self, trainer: TrainingLoop, metrics: Mapping[str, Any]) -> None:
        pass

    def on_epoch_end(self, trainer: TrainingLoop, epoch: int, record: Record) -> None:
        pass

    def on_log(self, trainer: TrainingLoop, metrics: dict[str, float], step: int) -> None:
        """Metrics a callback logged with `trainer.log` at `step` (checked already)."""

    def on_checkpoint(self, trainer: TrainingLoop, path: Any, meta: dict) -> None:
        """A checkpoint covering `meta["step"]` is complete at `path`. Called from the
        checkpoint writer's thread."""

    def on_fit_end(self, trainer: TrainingLoop) -> None:
        pass

    def state_dict(self) -> dict:
        """What this callback must remember across a resume (kept in the trainer's
        checkpoints); empty for most."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Trainer:
    """Trains `model` on `dataset` with `loss` and `optimizer`. Each epoch's record has
    its train_* and val_* metrics, samples_per_second, and compile_seconds (JAX's
    compile time so far in this fit).

    The data order of every epoch is a function of `seed` alone, and the step
    count lives in the optimizer state, so a trainer restored with
    `load_state_dict` continues exactly where the saved one stopped, also in the
    middle of an epoch (its steps' metrics so far are in the state) and with its
    callbacks' own state (best epoch so far, patience).

    `log(name, value)` (from a callback) logs a metric of your own at the current
    step; values added to the epoch's record in `on_epoch_end` are checked the same
    way once the callback returns.

    `precision="bf16"` trains and evaluates in mixed precision: float32 master weights
    and optimizer state, the model computed in bfloat16, the loss in float32 (see
    zkynet.framework.compile); "float32" (the default) casts nothing.
    """

    def __init__(
        self,
        model,
        loss: Callable,
        optimizer: Optimizer,
        dataset: Dataset,
        epochs: int,
        batch_size: int,
        metrics: Callable | None = None,
        seed: int = 0,
        eval_batch_size: int | None = None,
        drop_last: bool = True,
        jit: bool = True,
        callbacks: Sequence[Callback] = (),
        devices: int = 1,
        precision: str = "float32",
    ):
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        check_finite(dataset)
        self.model, self.dataset, self.epochs, self.seed = model, dataset, epochs, seed
        parallel = DataParallel(devices) if devices != 1 else None
        if parallel is not None and batch_size % parallel.size:
            raise ValueError(f"batch_size {batch_size} does not split over {parallel.size} devices")
        place = parallel.batch if parallel is not None else None
        self.train_step = TrainStep(
            model, loss, optimizer, metrics, seed=seed, jit=jit, parallel=parallel, precision=precision
        )
        self.eval_step = EvalStep(model, loss, metrics, jit=jit, precision=precision)
        self.batches = Batches(dataset.train, batch_size, shuffle=True, seed=seed, drop_last=drop_last, place=place)
        self.eval_batches = Batches(dataset.validation, eval_batch_size or batch_size, shuffle=False, place=place)
        self.callbacks = list(callbacks)
        self.history: list[Record] = []
        self.should_stop = False
        self._epoch_steps: list = []  # the current epoch's step metrics (device arrays)
        self._resumed_steps: list = []  # those of the steps before a mid-epoch state was saved
        self._calling = "Trainer"  # the hook being called: errors in what it logs name it

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    @property
    def step(self) -> int:
        return self.train_step.step

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return self.step // self.steps_per_epoch

    def fit(self) -> list[Record]:
        """Run the remaining epochs (all of them, for a new trainer); returns the
        per-epoch history of this call."""
        start_epoch, start_batch = divmod(self.step, self.steps_per_epoch)
        with _CompileClock() as clock:
            self._notify("on_fit_start")
            for epoch in range(start_epoch, self.epochs):
                self._notify("on_epoch_start", epoch)
                record = self._train_epoch(epoch, start_batch if epoch == start_epoch else 0)
                record["compile_seconds"] = clock.seconds
                self.history.append(record)
                self._notify("on_epoch_end", epoch, record)
                if self.should_stop:
                    break
            self._notify("on_fit_end")
        return self.history

    def _train_epoch(self, epoch, start_batch):
        steps = self._epoch_steps = list(self._resumed_steps) if start_batch else []
        self._resumed_steps = []
        examples, started = 0, time.perf_counter()
        for batch in self.batches.epoch(epoch, start=start_batch):
            metrics = self.train_step(*batch)  # device arrays: no wait for the step to finish
            steps.append(metrics)  # first: a state saved by a callback of this step holds it
            self._notify("on_step", metrics)
            examples += len(batch[0])
        means = jax.tree_util.tree_map(lambda *values: float(np.mean(values)), *steps) if steps else {}
        seconds = time.perf_counter() - started
        return {
            "epoch": epoch + 1,
            **{f"train_{k}": v for k, v in means.items()},
            **{f"val_{k}": v for k, v in self.evaluate().items()},
            "samples_per_second": examples / seconds,
        }

    def _notify(self, hook, *args):
        loop: TrainingLoop = self  # what the callbacks see
        record = args[1] if hook == "on_epoch_end" else None
        outer = self._calling
        try:
            for callback in self.callbacks:
                self._calling = f"{type(callback).__name__}.{hook}"
                before = dict(record) if record is not None else None
                getattr(callback, hook)(loop, *args)
                if record is not None and before is not None:
                    for name in [k for k in record if k not in before or record[k] is not before[k]]:
                        try:
                            record[name] = checked_metric(name, record[name], f"{self._calling} (record[{name!r}])")
                        except MetricError:
                            del record[name]  # the record (in history) keeps only metrics
                            raise
        finally:
            self._calling = outer

    def log(self, name: str, value: Any, allow_nonfinite: bool = False) -> None:
        """Log metric `name` = `value` (a finite number: NaN or inf only with
        `allow_nonfinite`) at the current step, for the callbacks that record metrics
        (a tracker: the runner sends them to MLflow). Call it from a callback's hook."""
        metrics = {name: checked_metric(name, value, f"{self._calling}: trainer.log", allow_nonfinite)}
        self._notify("on_log", metrics, self.step)

    def evaluate(self, batches: Batches | None = None) -> dict[str, float]:
        """Metrics on the validation split (or `batches`), averaged over examples."""
        totals: dict[str, Any] = {}
        seen = 0
        for batch in (batches or self.eval_batches).epoch():
            size = len(batch[0])
            for name, value in self.eval_step(*batch).items():
                totals[name] = totals.get(name, 0.0) + value * size
            seen += size
        return {name: float(np.asarray(total)) / seen for name, total in totals.items()}

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: parameters, optimizer state (with the
        step count), where the loop stands, the metrics of the current epoch's steps
        when it stands inside one, and the callbacks' own state."""
        state = {**self.train_step.state_dict(), "meta": {"step": self.step, "epoch": self.epoch, "seed": self.seed}}
        inside = self.step % self.steps_per_epoch
        if inside and len(self._epoch_steps) == inside:
            state["epoch_steps"] = {
                name: np.stack([np.asarray(s[name]) for s in self._epoch_steps]) for name in self._epoch_steps[0]
            }
        callbacks = {key: c.state_dict() for key, c in _keyed(self.callbacks).items()}
        callbacks = {key: value for key, value in callbacks.items() if value}
        if callbacks:
            state["callbacks"] = callbacks
        return state

    def load_state_dict(self, state: dict) -> None:
        _check_seed(state, self.seed, "trainer")
        self.train_step.load_state_dict(state)
        steps = state.get("epoch_steps") or {}
        count = len(next(iter(steps.values()))) if steps else 0
        self._resumed_steps = [{name: values[i] for name, values in steps.items()} for i in range(count)]
        self._epoch_steps = list(self._resumed_steps)
        saved = state.get("callbacks") or {}
        for key, callback in _keyed(self.callbacks).items():
            if key in saved:
                callback.load_state_dict(saved[key])


def _keyed(callbacks):
    """{"EarlyStopping": callback, "BestCheckpoint": ..., "EarlyStopping.2": a second one}."""
    keyed: dict[str, Callback] = {}
    for callback in callbacks:
        name = type(callback).__name__
        key, n = name, 1
        while key in keyed:
            n += 1
            key = f"{name}.{n}"
        keyed[key] = callback
    return keyed


class _CompileClock:
    """Seconds JAX spent tracing, lowering and compiling while the block ran (what a
    warm persistent compilation cache saves), from JAX's own monitoring events."""

    EVENTS = (
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )

    def __enter__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._heard)
        return self

    def _heard(self, event: str, duration_secs: float, **kwargs: str | int) -> None:
        if event in self.EVENTS:
            self.seconds += duration_secs

    def __exit__(self, *exception):
        jax.monitoring.unregister_event_duration_listener(self._heard)


def _check_seed(state, seed, holder):
    """A state continues exactly only with the data order it was trained with."""
    trained_with = int(state.get("meta", {}).get("seed", seed))
    if trained_with != seed:
        raise ValueError(
            f"this state was trained with seed {trained_with}, this {holder} has seed {seed}: "
            "the data order would differ"
        )


def check_finite(dataset, rows_per_chunk=65536):
    """NaN or inf in the data would surface later as a diverging loss, blamed on the
    learning rate: refuse it here, naming where it is. Read in chunks, so that a
    memory-mapped split is checked without being loaded whole."""
    for split_name in ("train", "validation", "test"):
        split = getattr(dataset, split_name, None)
        if split is None:
            continue
        for part in ("inputs", "targets"):
            array = getattr(split, part)
            if np.dtype(array.dtype).kind != "f":
                continue
            bad = [
                np.unique(np.nonzero(~np.isfinite(chunk))[0]) + start
                for start in range(0, len(array), rows_per_chunk)
                for chunk in [np.asarray(array[start : start + rows_per_chunk])]
                if not np.isfinite(chunk).all()
            ]
            if bad:
                rows = np.concatenate(bad)
                raise ValueError(
                    f"dataset {getattr(dataset, 'name', '')!r}: {split_name} {part} contain NaN or "
                    f"inf in {len(rows)} example(s) (first: row {rows[0]}); clean the data first"
                )


_check_finite = check_finite  # its name in zkynet.training.population
