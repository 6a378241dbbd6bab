"""Reading elements by position: x[key] (getitem) and integer-array lookups (take).

Out-of-range integer indices never give a silent number. JAX itself would clamp
them in x[i] (a wrong element, and a zero gradient) and fill them with NaN in take:
  * concrete indices (Python ints, which are always known while the graph is built,
    NumPy arrays, and JAX arrays outside jit) are checked when the node is made:
    IndexOutOfRangeError names the operator, the axis, its size and the index.
    Negative indices count from the end, as in Python (x[-1] is the last element);
    slices follow Python's rules (they never fail, they stop at the ends).
  * traced indices (inside jit, e.g. token ids of a batch) cannot be checked without
    stopping the compiled program, so the lookup runs in JAX's "fill" mode: an
    out-of-range index reads NaN (floats; for integers the dtype's most negative
    value, for booleans True) instead of a clamped, plausible element, and gets no
    gradient. The NaN reaches the loss, so a NaN guard (zkynet.training.NanGuard)
    stops the run instead of training on a wrong element. To find the culprit, run
    the same batch eagerly (TrainStep(..., jit=False)): the check then names it.

This module is getitem's. The integer-array lookups (take, scatter_add, take_along_axis,
add_along_axis) are gather_scatter.py's, and importable from here too, as before; the
checks of the rule above, which both use, are index_checks.py's.
"""

import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework import xp
from zkynet.framework.builder import NodeLike, as_node
from zkynet.framework.errors import IndexOutOfRangeError
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Fused
from zkynet.framework.ops.gather_scatter import (
    AddAlongAxis,
    ScatterAdd,
    Take,
    TakeAlongAxis,
    add_along_axis,
    scatter_add,
    take,
    take_along_axis,
)
from zkynet.framework.ops.index_checks import _check_range, _describe, _is_concrete
from zkynet.framework.slice_cotangent import SliceCotangent

__all__ = [
    "Getitem",
    "Take",
    "IndexAdd",
    "ScatterAdd",
    "TakeAlongAxis",
    "AddAlongAxis",
    "getitem",
    "take",
    "scatter_add",
    "take_along_axis",
    "add_along_axis",
]


class _Position:
    """Where an integer stood in an index key (its value is passed as an input)."""

    def __repr__(self):
        return "<int>"


_POSITION = _Position()
_NO_POSITIONS = np.zeros(0, np.int32)  # a key without integers, read without a device transfer


class Getitem(Fused):
    """x[key] for a key of ints, slices, None, Ellipsis, integer or boolean arrays.
    `op.getitem` moves the plain integers of the key into the `positions` input
    instead of compiling them in, so x[0], x[1], ... (a loop over time steps)
    share one computation; `key` keeps a placeholder where each one stood."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = False  # only `positions`, a constant that is rebuilt with the graph
    vjp_uses_out = False
    check_integer_overflow = False  # only moves elements
    input_names = ("x", "positions")

    def __init__(self, key, single):
        super().__init__()
        self.key, self.single = key, single

    def _key(self, positions):
        return _filled_key(self.key, self.single, positions)

    def check(self, x, positions):
        """Every integer of the key (and every concrete integer array in it) within its axis."""
        self._check_key(x, np.asarray(positions.value).tolist())

    def _check_key(self, x, ints):
        """IndexOutOfRangeError unless the key, with `ints` (Python ints) for its placeholders,
        fits `x` (a node or anything with a shape and dtype)."""
        parts, shape = self.key, x.shape
        counts = [
            0
            if k is None or k is Ellipsis or isinstance(k, (bool, np.bool_))
            else np.ndim(k)
            if _is_bool_array(k)
            else 1
            for k in parts
        ]
        if sum(counts) > len(shape):
            values = iter(ints)
            key = tuple(next(values) if k is _POSITION else k for k in parts)
            raise IndexOutOfRangeError(
                f"{self._where()}: the key {key[0] if self.single else key!r} indexes "
                f"{sum(counts)} axes of an input with {len(shape)} ({_describe(x)})"
            )
        ints = iter(ints)
        axis = 0
        for part, count in zip(parts, counts, strict=True):
            if part is Ellipsis:
                axis += len(shape) - sum(counts)
                continue
            if part is _POSITION:
                _check_range(np.asarray(next(ints), np.int64), shape[axis], axis, x, self._where(), "index")
            elif count == 1 and not isinstance(part, slice) and not _is_bool_array(part) and _is_concrete(part):
                _check_range(np.asarray(part), shape[axis], axis, x, self._where(), "integer-array index")
            axis += count

    def call(self, x, positions):
        key = self._key(positions.value)
        if any(isinstance(k, jax.core.Tracer) for k in (key if isinstance(key, tuple) else (key,))):
            return x.value.at[key].get(mode="fill")  # traced indices: NaN, not a clamped element
        return x.value[key]

    def pullback(self, g, node):
        if all(k is Ellipsis or k is _POSITION or isinstance(k, slice) for k in self.key):
            return self.vjp(g, node.value, *node.inputs)  # at most one pad (see vjp): nothing to fuse
        return super().pullback(g, node)

    def vjp(self, g, out, x, positions):
        if not isinstance(positions.value, jax.core.Tracer):  # always, but inside an eager fusion
            key = self._key(np.asarray(positions.value) if positions.shape[0] else _NO_POSITIONS)
            cut = _slice_padding(key if isinstance(key, tuple) else (key,), x.shape)
            if cut is not None:  # slices and integers only: g zero-padded back to x's shape, no scatter
                padding, integer_axes = cut
                return _padded(g, padding, integer_axes, x.shape), None
        if xp.on_nodes(g):
            return IndexAdd(self.key, self.single)(xp.zeros(x.shape, g.dtype), g, positions.value), None
        key = self._key(positions.value)
        return jnp.zeros(x.shape, g.dtype).at[key].add(g), None  # drops out-of-range


class IndexAdd(Fused):
    """x with `update` added at x[key] (x.at[key].add(update); repeated indices add up,
    out-of-range ones are dropped): the transpose of getitem, which its rule builds for
    keys other than slices and integers. `key` and `positions` are getitem's."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # a sum of integers may wrap, as x.at[key].add does in JAX
    vjp_uses_inputs = vjp_uses_out = False
    input_names = ("x", "update", "positions")

    def __init__(self, key, single):
        super().__init__()
        self.key, self.single = key, single

    def _key(self, positions):
        return _filled_key(self.key, self.single, positions)

    def call(self, x, update, positions):
        return x.value.at[self._key(positions.value)].add(update.value)

    def vjp(self, g, out, x, update, positions):
        if xp.on_nodes(g):
            return g, Getitem(self.key, self.single)(g, positions.value), None
        return g, g[self._key(positions.value)], None


def _filled_key(template, single, positions):
    """An index key: `template` with `positions`' integers where its placeholders stand."""
    values = iter(positions[i] for i in range(positions.shape[0]))
    key = tuple(next(values) if k is _POSITION else k for k in template)
    return key[0] if single else key


def _padded(g, padding, integer_axes, shape):
    """g zero-padded back to `shape` (lax.pad's `padding`; the key's integers removed
    `integer_axes`): a SliceCotangent where a single axis is cut, contiguously, so that
    the cotangents of slices side by side (x[..., :h] and x[..., h:], or x[0], x[1], ...)
    are joined by one concatenation instead of adding padded arrays (see SliceCotangent)."""
    cut = [axis for axis, p in enumerate(padding) if tuple(p) != (0, 0, 0)]
    if len(cut) == 1 and padding[cut[0]][2] == 0 and set(integer_axes) <= set(cut) and not xp.on_nodes(g):
        return SliceCotangent.block(tuple(shape), cut[0], padding[cut[0]][0], g, squeezed=bool(integer_axes))
    if integer_axes:
        g = xp.expand_dims(g, integer_axes)
    return xp.pad(g, padding) if cut else g


def _slice_padding(key, shape):
    """(lax.pad's (low, high, interior) per axis that undoes x[key], the axes that the
    key's integers removed) for a key of forward slices, in-range integers and Ellipsis
    only (what a model's x[..., a:b] or x[:, t] is), else None."""
    if (
        any(
            (k is not Ellipsis and not isinstance(k, (slice, numbers.Integral))) or isinstance(k, (bool, np.bool_))
            for k in key
        )
        or sum(k is Ellipsis for k in key) > 1
    ):
        return None
    rest = len(shape) - (len(key) - (Ellipsis in key))  # the axes the key leaves whole
    if Ellipsis not in key:
        key = key + (Ellipsis,)
    parts = []
    for k in key:
        parts += [slice(None)] * rest if k is Ellipsis else [k]
    padding, integer_axes = [], []
    for axis, (part, size) in enumerate(zip(parts, shape, strict=True)):
        if not isinstance(part, slice):
            if not -size <= part < size:
                return None
            integer_axes.append(axis)
            part = slice(part % size, part % size + 1)
        start, stop, step = part.indices(size)
        count = len(range(start, stop, step))
        if step < 1 or count == 0:
            return None
        padding.append((start, size - (start + (count - 1) * step + 1), step - 1))
    return padding, tuple(integer_axes)


def _is_bool_array(k):
    return hasattr(k, "dtype") and np.ndim(k) > 0 and k.dtype == bool


def _split_key(key):
    """(the key with placeholders for its plain ints, those ints, whether it was one item)."""
    parts = tuple(
        np.asarray(k) if isinstance(k, list) else k  # NumPy's x[[1, 0]]
        for k in (key if isinstance(key, tuple) else (key,))
    )
    is_int = [isinstance(k, numbers.Integral) and not isinstance(k, (bool, np.bool_)) for k in parts]
    template = tuple(_POSITION if i else k for k, i in zip(parts, is_int, strict=True))
    positions = _positions(tuple(int(k) for k, i in zip(parts, is_int, strict=True) if i))
    return template, positions, not isinstance(key, tuple)


@functools.lru_cache(maxsize=4096)
def _positions(ints):
    """The integers of an index key as a device array, made once per distinct key
    (concrete even when first asked for inside a jit trace, so it may be cached)."""
    with jax.ensure_compile_time_eval():
        return jnp.asarray(np.array(ints, np.int32).reshape(len(ints)))


def getitem(x: NodeLike, key: Any) -> Node:
    """x[key]; a node as the key is an integer-array lookup along axis 0 (`take`).
    Out-of-range integers raise IndexOutOfRangeError (always, for Python ints: they
    are known while the graph is built); traced integer arrays read NaN out of range
    (module docstring)."""
    if isinstance(key, Node):
        return take(x, key)
    parts = key if isinstance(key, tuple) else (key,)
    ints = [int(k) for k in parts if isinstance(k, numbers.Integral) and not isinstance(k, (bool, np.bool_))]
    if any(not -(2**31) <= k < 2**31 for k in ints):  # beyond any axis and the int32 positions: refuse now
        template = tuple(
            _POSITION
            if isinstance(k, numbers.Integral) and not isinstance(k, (bool, np.bool_))
            else np.asarray(k)
            if isinstance(k, list)
            else k
            for k in parts
        )
        Getitem(template, not isinstance(key, tuple))._check_key(as_node(x), ints)
    template, positions, single = _split_key(key)
    return Getitem(template, single)(x, positions)
