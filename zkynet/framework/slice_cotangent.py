"""The cotangent a slice's backward rule gives: zero but for one block along one axis.

Slices of one array (an LSTM's [h, c] state split in two, a VAE's mean and log-variance,
attention's q, k, v) each hand back their cotangent zero-padded to the whole array, and
the graph adds them up: pad(a) + pad(b). XLA's CPU backend compiles that sum as a scalar
loop, and every fusion that reads a part of it re-slices it element by element. So a
slice's rule returns a SliceCotangent, blocks at their offsets along one axis; the
graph's sum of two over disjoint blocks keeps the blocks, and the array is built when a
backward rule or the caller reads it: one concatenation, with zeros only in the gaps
(slices that fit together leave none).
"""

import bisect
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


@jax.tree_util.register_pytree_node_class
class SliceCotangent:
    """An array of `shape` that is zero but for `blocks` (arrays of one dtype), the i-th
    placed along `axis` at `starts[i]`; the starts are sorted and the blocks disjoint.
    A block read by an integer index (x[:, t]) lacks the axis: its `squeezed` entry is
    True and it is one wide there. A pytree, so that a jitted backward rule can return one."""

    __slots__ = ("shape", "axis", "starts", "squeezed", "blocks")

    def __init__(
        self,
        shape: tuple[int, ...],
        axis: int,
        starts: tuple[int, ...],
        squeezed: tuple[bool, ...],
        blocks: tuple[jax.Array, ...],
    ):
        self.shape, self.axis, self.starts, self.squeezed, self.blocks = shape, axis, starts, squeezed, blocks

    @classmethod
    def block(
        cls, shape: tuple[int, ...], axis: int, start: int, block: jax.Array, squeezed: bool = False
    ) -> "SliceCotangent":
        """Zero but for `block` at `start` along `axis`."""
        return cls(shape, axis, (start,), (squeezed,), (block,))

    @property
    def dtype(self) -> Any:
        return self.blocks[0].dtype

    def _stop(self, i: int) -> int:
        return self.starts[i] + (1 if self.squeezed[i] else self.blocks[i].shape[self.axis])

    def plus(self, other: "jax.Array | SliceCotangent") -> "jax.Array | SliceCotangent":
        """self + other: blocks side by side when both are SliceCotangents over disjoint
        blocks of the same axis and dtype, else the dense sum."""
        if (
            isinstance(other, SliceCotangent)
            and other.axis == self.axis
            and other.dtype == self.dtype
            and other.shape == self.shape
        ):
            merged = self
            for i in range(len(other.blocks)):
                grown = merged._with(other.starts[i], other._stop(i), other.squeezed[i], other.blocks[i])
                if grown is None:
                    break
                merged = grown
            else:
                return merged
        return self.dense() + (other.dense() if isinstance(other, SliceCotangent) else other)

    def _with(self, start: int, stop: int, squeezed: bool, block: jax.Array) -> "SliceCotangent | None":
        """This with one more block over start:stop, or None where that overlaps a block."""
        at = bisect.bisect(self.starts, start)
        if (at and self._stop(at - 1) > start) or (at < len(self.starts) and self.starts[at] < stop):
            return None

        def insert(values: tuple, value: Any) -> tuple:
            return values[:at] + (value,) + values[at:]

        return SliceCotangent(
            self.shape,
            self.axis,
            insert(self.starts, start),
            insert(self.squeezed, squeezed),
            insert(self.blocks, block),
        )

    def dense(self) -> jax.Array:
        """The whole array: one pad for a single block, else one concatenation of the
        blocks and the zeros between them (one cached XLA computation when eager)."""
        return _assemble(self.shape, self.axis, self.starts, self.squeezed, *self.blocks)

    def tree_flatten(self) -> tuple[tuple[jax.Array, ...], tuple[Any, ...]]:
        return self.blocks, (self.shape, self.axis, self.starts, self.squeezed)

    @classmethod
    def tree_unflatten(cls, aux: tuple[Any, ...], blocks: tuple[jax.Array, ...]) -> "SliceCotangent":
        shape, axis, starts, squeezed = aux
        return cls(shape, axis, starts, squeezed, tuple(blocks))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _assemble(
    shape: tuple[int, ...], axis: int, starts: tuple[int, ...], squeezed: tuple[bool, ...], *blocks: jax.Array
) -> jax.Array:
    blocks = tuple(jnp.expand_dims(b, axis) if s else b for b, s in zip(blocks, squeezed, strict=True))
    stops = [start + block.shape[axis] for start, block in zip(starts, blocks, strict=True)]
    if len(blocks) == 1:
        padding = [(0, 0, 0)] * len(shape)
        padding[axis] = (starts[0], shape[axis] - stops[0], 0)
        return lax.pad(blocks[0], jnp.zeros((), blocks[0].dtype), padding)
    pieces, at = [], 0
    for start, stop, block in zip(starts, stops, blocks, strict=True):
        if start > at:
            pieces.append(_zeros(shape, axis, start - at, block.dtype))
        pieces.append(block)
        at = stop
    if at < shape[axis]:
        pieces.append(_zeros(shape, axis, shape[axis] - at, blocks[0].dtype))
    # materialized: without the barrier XLA folds a rule's slices of the concatenation back into
    # its blocks, and an unrolled LSTM's cotangents fused across all its steps (compile 18 s vs 3 s)
    return lax.optimization_barrier(jnp.concatenate(pieces, axis=axis))


def _zeros(shape: tuple[int, ...], axis: int, width: int, dtype: Any) -> jax.Array:
    return jnp.zeros(shape[:axis] + (width,) + shape[axis + 1 :], dtype)


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
