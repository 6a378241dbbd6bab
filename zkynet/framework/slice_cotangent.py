"""The cotangent a slice's backward rule gives: zero but for one block along one axis.

Slices of one array (an LSTM's [h, c] state split in two, a VAE's mean and log-variance)
each hand back their cotangent zero-padded to the whole array, and the graph adds them
up: pad(a) + pad(b). XLA's CPU backend compiles that sum as a scalar loop, about ten
times slower than a concatenation (two of them cost ~30 us of each ~140 us backward
step of the benchmark's LSTM, measured). So a slice's rule returns a SliceCotangent,
blocks at their offsets along one axis; the graph's sum of two over disjoint blocks
keeps the blocks, and the array is built when a backward rule or the caller reads it:
one concatenation, with zeros only in the gaps (slices that fit together leave none).
"""
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


@jax.tree_util.register_pytree_node_class
class SliceCotangent:
    """An array of `shape` that is zero but for `blocks` (arrays of one dtype), the i-th
    placed along `axis` at `starts[i]`; the starts are sorted and the blocks disjoint.
    A pytree, so that a jitted backward rule can return one."""
    __slots__ = ("shape", "axis", "starts", "blocks")

    def __init__(self, shape: tuple[int, ...], axis: int, starts: tuple[int, ...], blocks: tuple[jax.Array, ...]):
        self.shape, self.axis, self.starts, self.blocks = shape, axis, starts, blocks

    @property
    def dtype(self) -> Any:
        return self.blocks[0].dtype

    def _stops(self) -> list[int]:
        return [start + block.shape[self.axis] for start, block in zip(self.starts, self.blocks)]

    def plus(self, other: "jax.Array | SliceCotangent") -> "jax.Array | SliceCotangent":
        """self + other: blocks side by side when both are SliceCotangents over disjoint
        blocks of the same axis and dtype, else the dense sum."""
        if (isinstance(other, SliceCotangent) and other.axis == self.axis and other.dtype == self.dtype
                and other.shape == self.shape):
            pairs = sorted(zip(self.starts + other.starts, self.blocks + other.blocks), key=lambda p: p[0])
            merged = SliceCotangent(self.shape, self.axis, tuple(s for s, _ in pairs), tuple(b for _, b in pairs))
            stops = merged._stops()
            if all(stop <= start for stop, start in zip(stops, merged.starts[1:])):
                return merged
        return self.dense() + (other.dense() if isinstance(other, SliceCotangent) else other)

    def dense(self) -> jax.Array:
        """The whole array: one pad for a single block, else one concatenation of the
        blocks and the zeros between them."""
        size = self.shape[self.axis]
        if len(self.blocks) == 1:
            padding = [(0, 0, 0)] * len(self.shape)
            padding[self.axis] = (self.starts[0], size - self._stops()[0], 0)
            return lax.pad(self.blocks[0], jnp.zeros((), self.dtype), padding)
        pieces, at = [], 0
        for start, stop, block in zip(self.starts, self._stops(), self.blocks):
            if start > at:
                pieces.append(self._zeros(start - at))
            pieces.append(block)
            at = stop
        if at < size:
            pieces.append(self._zeros(size - at))
        return jnp.concatenate(pieces, axis=self.axis)

    def _zeros(self, width: int) -> jax.Array:
        shape = list(self.shape)
        shape[self.axis] = width
        return jnp.zeros(shape, self.dtype)

    def tree_flatten(self) -> tuple[tuple[jax.Array, ...], tuple[Any, ...]]:
        return self.blocks, (self.shape, self.axis, self.starts)

    @classmethod
    def tree_unflatten(cls, aux: tuple[Any, ...], blocks: tuple[jax.Array, ...]) -> "SliceCotangent":
        return cls(*aux, tuple(blocks))


def dense(g: "jax.Array | SliceCotangent") -> jax.Array:
    """`g` as an array."""
    return g.dense() if isinstance(g, SliceCotangent) else g


def add(a: "jax.Array | SliceCotangent", b: "jax.Array | SliceCotangent") -> "jax.Array | SliceCotangent":
    """a + b, keeping blocks apart where both are SliceCotangents that fit together."""
    if isinstance(a, SliceCotangent):
        return a.plus(b)
    if isinstance(b, SliceCotangent):
        return b.plus(a)
    return a + b
