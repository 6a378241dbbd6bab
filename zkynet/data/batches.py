"""Mini-batches of arrays: reshuffled each epoch from a seed (so any epoch's order
can be replayed, e.g. to resume), optionally dropping a short last batch, and
copied to the device(s) a few batches ahead of use (`place` decides where)."""

import collections

import jax
import numpy as np


class Batches:
    def __init__(self, split, batch_size, shuffle=True, seed=0, drop_last=False, prefetch=2, place=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.arrays = (split.inputs, split.targets) if hasattr(split, "inputs") else tuple(split)
        self.size = len(self.arrays[0])
        if any(len(a) != self.size for a in self.arrays):
            raise ValueError("all arrays must have the same length")
        if drop_last and self.size < batch_size:
            raise ValueError(f"only {self.size} examples: no full batch of {batch_size}")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.prefetch = drop_last, prefetch
        self.place = place or (lambda arrays: tuple(jax.device_put(a) for a in arrays))  # e.g. DataParallel.batch

    def __len__(self):
        """Batches per epoch."""
        full, rest = divmod(self.size, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def order(self, epoch):
        """The example order of `epoch`: a function of (seed, epoch) only."""
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng((self.seed, epoch)).permutation(self.size)

    def epoch(self, epoch=0, start=0):
        """Iterate over the batches of `epoch`, from batch number `start`; each batch is
        a tuple of device arrays."""
        order = self.order(epoch)
        pending: collections.deque[tuple] = collections.deque()
        for index in range(start, len(self)):
            rows = order[index * self.batch_size : (index + 1) * self.batch_size]
            pending.append(self.place([a[rows] for a in self.arrays]))  # an asynchronous copy
            if len(pending) > self.prefetch:
                yield pending.popleft()
        yield from pending

    def __iter__(self):
        return self.epoch(0)
