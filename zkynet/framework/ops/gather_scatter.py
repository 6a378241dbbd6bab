"""Reads and writes at integer-array indices along an axis: take (an embedding lookup) and
scatter_add, its transpose; take_along_axis (what sort, argmax and top-k indices read)
and add_along_axis, its transpose. Each one's rule is the other, so derivatives of
derivatives pass through them. (Also importable from indexing.py, where they lived first.)

Out-of-range indices follow indexing.py's rule (its module docstring, checked by
index_checks.py): concrete ones raise IndexOutOfRangeError; traced ones read NaN, and
make a written result NaN.
"""

import numbers

import jax.numpy as jnp
import numpy as np

from zkynet.framework import xp
from zkynet.framework.builder import NodeLike
from zkynet.framework.errors import ShapeError, ValueTypeError
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Fused
from zkynet.framework.ops.index_checks import _check_range, _describe, _is_concrete, _poisoned

__all__ = [
    "Take",
    "ScatterAdd",
    "TakeAlongAxis",
    "AddAlongAxis",
    "take",
    "scatter_add",
    "take_along_axis",
    "add_along_axis",
]


class Take(Fused):
    """Elements of x at integer `indices` along `axis` (None: of x flattened): an
    embedding lookup for axis 0. The indices may be a node (they get no gradient).
    Concrete indices out of range are refused; traced ones read NaN (see the module
    docstring)."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_out = False
    check_integer_overflow = False  # only moves elements
    input_names = ("x", "indices")

    def __init__(self, axis=0):
        super().__init__()
        self.axis = axis

    def check(self, x, indices):
        if not jnp.issubdtype(indices.dtype, jnp.integer):
            raise ValueTypeError(
                f"{self._where()}: indices must be integers, got {_describe(indices)}; "
                "convert them, e.g. indices.astype(int)"
            )
        if self.axis is None:
            size, axis = x.value.size, "0 of the flattened input"
        elif -x.ndim <= self.axis < x.ndim:
            size, axis = x.shape[self.axis], self.axis % x.ndim
        else:
            raise ShapeError(
                f"{self._where()}: axis {self.axis} is out of range for the input {_describe(x)} ({x.ndim} axes)"
            )
        if _is_concrete(indices.value):
            _check_range(np.asarray(indices.value), size, axis, x, self._where(), "index")

    def call(self, x, indices):
        return jnp.take(x.value, indices.value, axis=self.axis, mode="fill")

    def vjp(self, g, out, x, indices):
        if xp.on_nodes(g):
            return ScatterAdd(self.axis)(xp.zeros(x.shape, g.dtype), indices.value, g), None
        if self.axis is None:
            return jnp.zeros(x.value.size, g.dtype).at[indices.value].add(g).reshape(x.shape), None
        where = (slice(None),) * (int(self.axis) % x.ndim) + (indices.value,)
        return jnp.zeros(x.shape, g.dtype).at[where].add(g), None


class ScatterAdd(Fused):
    """x with `updates` added at integer `indices` along `axis` (None: of x flattened):
    x.at[indices].add(updates) for axis 0, the transpose of take. Repeated indices add
    up; concrete out-of-range indices are refused, traced ones dropped."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # a sum of integers may wrap, as x.at[i].add does in JAX
    vjp_uses_inputs = vjp_uses_out = False
    input_names = ("x", "indices", "updates")

    def __init__(self, axis=0):
        super().__init__()
        self.axis = axis

    def check(self, x, indices, updates):
        Take(self.axis).check(x, indices)
        taken = _taken_shape(x.shape, indices.shape, self.axis)
        if not _broadcasts(updates.shape, taken):
            raise ShapeError(
                f"{self._where()}: updates {_describe(updates)} do not fit the places they go to: "
                f"x {_describe(x)} at indices {_describe(indices)} along axis {self.axis} is shaped {list(taken)}"
            )

    def _where_key(self, x, indices):
        return (slice(None),) * (int(self.axis) % x.ndim) + (indices,)

    def call(self, x, indices, updates):
        if self.axis is None:
            result = x.value.reshape(-1).at[indices.value].add(updates.value).reshape(x.shape)
            return _poisoned(result, indices.value, x.value.size)
        result = x.value.at[self._where_key(x, indices.value)].add(updates.value)
        return _poisoned(result, indices.value, x.shape[int(self.axis) % x.ndim])

    def vjp(self, g, out, x, indices, updates):
        if xp.on_nodes(g):
            return g, None, Take(self.axis)(g, indices.value)
        return g, None, jnp.take(g, indices.value, axis=self.axis, mode="fill")


def _check_along_axis(op, x, indices, axis, shape_of_updates=None):
    """The checks take_along_axis and add_along_axis share: integer indices with x's rank,
    other axes that broadcast, an axis in range, concrete indices in range."""
    where = op._where()
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise ValueTypeError(
            f"{where}: indices must be integers, got {_describe(indices)}; convert them, e.g. indices.astype(int)"
        )
    if not isinstance(axis, numbers.Integral) or not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"{where}: axis {axis!r} is out of range for the input {_describe(x)} ({x.ndim} axes)")
    axis = int(axis) % x.ndim
    if indices.ndim != x.ndim:
        raise ShapeError(
            f"{where}: indices {_describe(indices)} must have as many axes as x {_describe(x)} "
            "(take_along_axis pairs them axis by axis; add size-1 axes to broadcast)"
        )
    for a, (n, m) in enumerate(zip(x.shape, indices.shape, strict=True)):
        if a != axis and n != m and 1 not in (n, m) and shape_of_updates is None:
            raise ShapeError(f"{where}: x {_describe(x)} and indices {_describe(indices)} differ on axis {a}")
    if shape_of_updates is not None:
        expected = tuple(m if a == axis else n for a, (n, m) in enumerate(zip(x.shape, indices.shape, strict=True)))
        if not _broadcasts(indices.shape, expected) or tuple(shape_of_updates) != expected:
            raise ShapeError(
                f"{where}: updates shaped {list(shape_of_updates)} must be x's shape {list(x.shape)} with axis "
                f"{axis} as long as the indices' ({list(expected)}), and the indices {_describe(indices)} must "
                "broadcast to it"
            )
    if _is_concrete(indices.value):
        _check_range(np.asarray(indices.value), x.shape[axis], axis, x, where, "index")
    return axis


class TakeAlongAxis(Fused):
    """x's elements at integer `indices` along `axis`, paired axis by axis with x's other axes
    (jnp.take_along_axis; size-1 axes broadcast): what sort, argmax and top-k indices read.
    Concrete indices out of range are refused; traced ones read NaN (module docstring)."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_out = False
    check_integer_overflow = False  # only moves elements
    input_names = ("x", "indices")

    def __init__(self, axis):
        super().__init__()
        self.axis = axis

    def check(self, x, indices):
        _check_along_axis(self, x, indices, self.axis)

    def call(self, x, indices):
        return jnp.take_along_axis(x.value, indices.value, axis=self.axis, mode="fill")

    def vjp(self, g, out, x, indices):
        axis = int(self.axis) % x.ndim
        shape = tuple(x.shape[a] if a == axis else n for a, n in enumerate(g.shape))
        return xp.add_along_axis(xp.zeros(shape, g.dtype), indices.value, g, axis), None


class AddAlongAxis(Fused):
    """x with `updates` added at integer `indices` along `axis` (the transpose of
    take_along_axis: updates shaped like take_along_axis(x, indices, axis)). Repeated
    indices add up; concrete ones out of range are refused, traced ones make the result
    NaN (module docstring)."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # a sum of integers may wrap, as x.at[i].add does in JAX
    vjp_uses_inputs = vjp_uses_out = False
    input_names = ("x", "indices", "updates")

    def __init__(self, axis):
        super().__init__()
        self.axis = axis

    def check(self, x, indices, updates):
        _check_along_axis(self, x, indices, self.axis, updates.shape)

    def call(self, x, indices, updates):
        axis = int(self.axis) % x.ndim
        index = jnp.broadcast_to(indices.value, updates.shape)
        result = x.value.at[xp.along_axis_key(index, axis, x.ndim)].add(updates.value, mode="drop")
        return _poisoned(result, indices.value, x.shape[axis])

    def vjp(self, g, out, x, indices, updates):
        return g, None, xp.take_along_axis(g, jnp.broadcast_to(indices.value, updates.shape), int(self.axis))


def take_along_axis(x: NodeLike, indices: NodeLike, axis: int) -> Node:
    """x's elements at `indices` along `axis`, as jnp.take_along_axis (indices have x's
    rank; other axes broadcast). The indices get no gradient; out-of-range ones raise
    IndexOutOfRangeError when concrete and read NaN when traced (module docstring)."""
    return TakeAlongAxis(axis)(x, indices)


def add_along_axis(x: NodeLike, indices: NodeLike, updates: NodeLike, axis: int) -> Node:
    """x with `updates` added at `indices` along `axis` (the transpose of take_along_axis:
    updates shaped like its result); repeated indices add up."""
    return AddAlongAxis(axis)(x, indices, updates)


def _taken_shape(shape, indices_shape, axis):
    if axis is None:
        return tuple(indices_shape)
    axis = int(axis) % len(shape)
    return tuple(shape[:axis]) + tuple(indices_shape) + tuple(shape[axis + 1 :])


def _broadcasts(shape, target):
    return len(shape) <= len(target) and all(s in (1, t) for s, t in zip(shape[::-1], target[::-1], strict=False))


def scatter_add(x: NodeLike, indices: NodeLike, updates: NodeLike, axis: int | None = 0) -> Node:
    """x with `updates` added at `indices` along `axis` (axis 0: x.at[indices].add(updates),
    rows of a table); repeated indices add up. Out-of-range indices raise when concrete."""
    return ScatterAdd(axis)(x, indices, updates)


def take(x: NodeLike, indices: NodeLike, axis: int | None = 0) -> Node:
    """x's elements at integer `indices` along `axis`; out-of-range indices raise
    IndexOutOfRangeError when concrete and read NaN when traced (module docstring)."""
    return Take(axis)(x, indices)
