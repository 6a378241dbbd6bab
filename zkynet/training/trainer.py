"""The training loop: epochs of compiled steps over shuffled batches, validation
after each epoch, and hooks (callbacks) for whoever watches: a progress report,
a NaN guard, checkpoints, an experiment tracker, a sweep scheduler."""

from __future__ import annotations

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


class Callback:
    """Hooks the loop calls, in the order the callbacks were given; override what you
    need. Setting `trainer.should_stop = True` ends training after the current epoch
    (early stopping); raising from a hook ends it at once."""

    def on_fit_start(self, trainer: TrainingLoop) -> None:
        pass

    def on_epoch_start(self, trainer: TrainingLoop, epoch: int) -> None:
        pass

    def on_step(self, trainer: TrainingLoop, metrics: Mapping[str, Any]) -> None:
        pass

    def on_epoch_end(self, trainer: TrainingLoop, epoch: int, record: Record) -> None:
        pass

    def on_checkpoint(self, trainer: TrainingLoop, path: Any, meta: dict) -> None:
        """A checkpoint covering `meta["step"]` is complete at `path`. Called from the
        checkpoint writer's thread."""

    def on_fit_end(self, trainer: TrainingLoop) -> None:
        pass


class Trainer:
    """Trains `model` on `dataset` with `loss` and `optimizer`. Each epoch's record has
    its train_* and val_* metrics, samples_per_second, and compile_seconds (JAX's
    compile time so far in this fit).

    The data order of every epoch is a function of `seed` alone, and the step
    count lives in the optimizer state, so a trainer restored with
    `load_state_dict` continues exactly where the saved one stopped.

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
        _check_finite(dataset)
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
        steps, examples, started = [], 0, time.perf_counter()
        for batch in self.batches.epoch(epoch, start=start_batch):
            metrics = self.train_step(*batch)  # device arrays: no wait for the step to finish
            self._notify("on_step", metrics)
            steps.append(metrics)
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
        for callback in self.callbacks:
            getattr(callback, hook)(loop, *args)

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
        step count), and where the loop stands."""
        return {**self.train_step.state_dict(), "meta": {"step": self.step, "epoch": self.epoch, "seed": self.seed}}

    def load_state_dict(self, state: dict) -> None:
        _check_seed(state, self.seed, "trainer")
        self.train_step.load_state_dict(state)


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


def _check_finite(dataset):
    """NaN or inf in the data would surface later as a diverging loss, blamed on the
    learning rate: refuse it here, naming where it is."""
    for split_name in ("train", "validation"):
        split = getattr(dataset, split_name)
        for part in ("inputs", "targets"):
            array = np.asarray(getattr(split, part))
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                rows = np.unique(np.nonzero(~np.isfinite(array))[0])
                raise ValueError(
                    f"dataset {getattr(dataset, 'name', '')!r}: {split_name} {part} contain NaN or "
                    f"inf in {len(rows)} example(s) (first: row {rows[0]}); clean the data first"
                )
