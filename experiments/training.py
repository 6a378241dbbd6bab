"""The training loop: epochs of compiled steps over shuffled batches, validation
after each epoch, and hooks for whoever watches (progress bar, tracking,
checkpoints)."""
import time

import jax
import numpy as np

from zkynet.data import Batches
from zkynet.framework.compile import EvalStep, TrainStep
from zkynet.framework.parallel import DataParallel


class Callback:
    """Hooks the loop calls; override what you need."""

    def on_epoch_start(self, trainer, epoch):
        pass

    def on_step(self, trainer, metrics):
        pass

    def on_epoch_end(self, trainer, epoch, metrics):
        pass


class Trainer:
    """Trains `model` on `dataset` with `loss` and `optimizer`.

    The data order of every epoch is a function of `seed` alone, and the step
    count lives in the optimizer state, so a run restored from a checkpoint
    continues exactly where it stopped.
    """

    def __init__(self, model, loss, optimizer, dataset, epochs, batch_size, metrics=None, seed=0,
                 eval_batch_size=None, drop_last=True, jit=True, callbacks=(), devices=1):
        self.model, self.dataset, self.epochs = model, dataset, epochs
        parallel = DataParallel(devices) if devices != 1 else None
        if parallel is not None and batch_size % parallel.size:
            raise ValueError(f"batch_size {batch_size} does not split over {parallel.size} devices")
        place = parallel.batch if parallel is not None else None
        self.train_step = TrainStep(model, loss, optimizer, metrics, seed=seed, jit=jit, parallel=parallel)
        self.eval_step = EvalStep(model, loss, metrics, jit=jit)
        self.batches = Batches(dataset.train, batch_size, shuffle=True, seed=seed, drop_last=drop_last, place=place)
        self.eval_batches = Batches(dataset.validation, eval_batch_size or batch_size, shuffle=False, place=place)
        self.callbacks = list(callbacks)
        self.history = []

    @property
    def steps_per_epoch(self):
        return len(self.batches)

    @property
    def step(self):
        return self.train_step.step

    def fit(self):
        """Run the remaining epochs; returns the per-epoch history."""
        start_epoch, start_batch = divmod(self.step, self.steps_per_epoch)
        for epoch in range(start_epoch, self.epochs):
            steps, examples, started = [], 0, time.perf_counter()
            for callback in self.callbacks:
                callback.on_epoch_start(self, epoch)
            for batch in self.batches.epoch(epoch, start=start_batch if epoch == start_epoch else 0):
                metrics = self.train_step(*batch)  # device arrays: no wait for the step to finish
                for callback in self.callbacks:
                    callback.on_step(self, metrics)
                steps.append(metrics)
                examples += len(batch[0])
            means = jax.tree_util.tree_map(lambda *values: float(np.mean(values)), *steps) if steps else {}
            seconds = time.perf_counter() - started
            record = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in means.items()},
                      **{f"val_{k}": v for k, v in self.evaluate().items()},
                      "samples_per_second": examples / seconds}
            self.history.append(record)
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, record)
        return self.history

    def evaluate(self, batches=None):
        """Metrics on the validation split (or `batches`), averaged over examples."""
        totals, seen = {}, 0
        for batch in (batches or self.eval_batches).epoch():
            size = len(batch[0])
            for name, value in self.eval_step(*batch).items():
                totals[name] = totals.get(name, 0.0) + value * size
            seen += size
        return {name: float(np.asarray(total)) / seen for name, total in totals.items()}
