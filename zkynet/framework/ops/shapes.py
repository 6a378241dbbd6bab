"""Operators that only move elements: reshape, transpose, broadcast, concat, stack, pad."""

import numbers
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from zkynet.framework import xp
from zkynet.framework.builder import NodeLike, as_node
from zkynet.framework.errors import ShapeError
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Fused, Unary

__all__ = [
    "Reshape",
    "Transpose",
    "BroadcastTo",
    "Concat",
    "Stack",
    "Pad",
    "Flip",
    "reshape",
    "transpose",
    "broadcast_to",
    "concat",
    "stack",
    "pad",
    "flip",
]


class Reshape(Unary):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # selects or moves elements: cannot overflow
    vjp_uses_inputs = False
    vjp_uses_out = False
    fuse_vjp = False

    def __init__(self, shape):
        super().__init__()
        self.new_shape = tuple(shape) if not isinstance(shape, int) else (shape,)

    def call(self, x):
        return jnp.reshape(x.value, self.new_shape)

    def vjp(self, g, out, x):
        return (xp.reshape(g, x.shape),)


class Transpose(Unary):
    """Permute axes (reverse them by default)."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # selects or moves elements: cannot overflow
    vjp_uses_inputs = False
    vjp_uses_out = False

    def __init__(self, axes=None):
        super().__init__()
        self.axes = axes

    def call(self, x):
        return jnp.transpose(x.value, self.axes)

    def vjp(self, g, out, x):
        if self.axes is None:
            return (xp.transpose(g),)
        return (xp.transpose(g, [int(a) for a in np.argsort([a % x.ndim for a in self.axes])]),)


class BroadcastTo(Unary):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # selects or moves elements: cannot overflow
    vjp_uses_inputs = False
    vjp_uses_out = False
    fuse_vjp = False

    def __init__(self, shape):
        super().__init__()
        self.new_shape = tuple(shape)

    def call(self, x):
        return jnp.broadcast_to(x.value, self.new_shape)

    def vjp(self, g, out, x):
        return (g,)  # the graph sums g back to x's shape


class Concat(Fused):
    """Join inputs along an existing axis."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # selects or moves elements: cannot overflow
    vjp_uses_inputs = False
    vjp_uses_out = False
    variadic = True

    def __init__(self, axis=0):
        super().__init__()
        self.axis = axis

    def call(self, *xs):
        return jnp.concatenate([x.value for x in xs], axis=self.axis)

    def vjp(self, g, out, *xs):
        ends = np.cumsum([x.shape[self.axis] for x in xs])
        return tuple(xp.split(g, [int(e) for e in ends[:-1]], axis=self.axis))


class Stack(Fused):
    """Join inputs along a new axis."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # selects or moves elements: cannot overflow
    vjp_uses_inputs = False
    vjp_uses_out = False
    variadic = True

    def __init__(self, axis=0):
        super().__init__()
        self.axis = axis

    def call(self, *xs):
        return jnp.stack([x.value for x in xs], axis=self.axis)

    def vjp(self, g, out, *xs):
        g = xp.moveaxis(g, self.axis, 0)
        return tuple(g[i] for i in range(len(xs)))


class Pad(Unary):
    """x with (low, high, interior) zeros per axis around and between its elements, as
    lax.pad (a negative low or high crops). Its transpose is a strided slice; it is the
    transpose of one too, which is how getitem's and pooling's rules place gradients."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # selects or moves elements: cannot overflow
    vjp_uses_inputs = vjp_uses_out = False

    def __init__(self, config):
        super().__init__()
        self.config = tuple((int(lo), int(hi), int(interior)) for lo, hi, interior in config)

    def call(self, x):
        if len(self.config) != x.ndim:
            raise ValueError(f"pad has {len(self.config)} (low, high, interior) triples for {x.ndim} axes")
        return lax.pad(x.value, jnp.zeros((), x.dtype), self.config)

    def vjp(self, g, out, x):
        if any(lo or hi for lo, hi, _ in self.config):
            g = xp.pad(g, [(-lo, -hi, 0) for lo, hi, _ in self.config])
        if any(interior for _, _, interior in self.config):
            g = g[tuple(slice(None, None, interior + 1) for _, _, interior in self.config)]
        return (g,)


class Flip(Unary):
    """x reversed along `axes` (jnp.flip); its transpose is itself."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # selects or moves elements: cannot overflow
    vjp_uses_inputs = vjp_uses_out = False

    def __init__(self, axes):
        super().__init__()
        self.axes = axes

    def check(self, x):
        axes = (self.axes,) if isinstance(self.axes, numbers.Integral) else self.axes
        if axes is not None and any(not -x.ndim <= a < x.ndim for a in axes):
            raise ShapeError(f"{self._where()}: axes {self.axes} out of range for an input shaped {list(x.shape)}")

    def call(self, x):
        return jnp.flip(x.value, self.axes)

    def vjp(self, g, out, x):
        return (xp.flip(g, self.axes),)


def flip(x: NodeLike, axis: int | Sequence[int] | None = None) -> Node:
    """x reversed along `axis` (an int, several, or None: every axis), as jnp.flip."""
    axes = axis if axis is None or isinstance(axis, int) else tuple(int(a) for a in axis)
    return Flip(axes)(x)


def reshape(x: NodeLike, shape: int | Sequence[int]) -> Node:
    return Reshape(shape)(x)


def transpose(x: NodeLike, axes: Sequence[int] | None = None) -> Node:
    return Transpose(axes)(x)


def broadcast_to(x: NodeLike, shape: Sequence[int]) -> Node:
    return BroadcastTo(shape)(x)


def concat(xs: Sequence[NodeLike], axis: int = 0) -> Node:
    return Concat(axis)(*xs)


def stack(xs: Sequence[NodeLike], axis: int = 0) -> Node:
    return Stack(axis)(*xs)


def pad_general(x: NodeLike, config: Sequence[tuple[int, int, int]]) -> Node:
    """x padded as lax.pad: (low, high, interior) zeros per axis (negative low/high crop)."""
    return Pad(config)(x)


def pad(x: NodeLike, pad_width: int | Sequence[int] | Sequence[Sequence[int]]) -> Node:
    """x with zeros around it, as jnp.pad: `pad_width` is one int for every side, a
    (before, after) pair for every axis, or one pair per axis. Widths are never negative."""
    node = as_node(x)
    where = Pad(())._where()
    widths = np.asarray(pad_width, dtype=object)
    try:
        if widths.ndim == 0 or widths.shape == (2,):
            widths = np.broadcast_to(np.asarray(pad_width, dtype=object).reshape(-1)[None], (node.ndim, 2))
        pairs = [(int(lo), int(hi)) for lo, hi in widths]
        integral = all(isinstance(v, numbers.Integral) for v in np.asarray(widths, dtype=object).ravel())
    except (TypeError, ValueError):
        pairs, integral = [], False
    if not integral or len(pairs) != node.ndim:
        raise ShapeError(
            f"{where}: pad_width must be an int, a (before, after) pair or one pair per axis of the input "
            f"{node.dtype}{list(node.shape)}, got {pad_width!r}"
        )
    if any(lo < 0 or hi < 0 for lo, hi in pairs):
        raise ShapeError(
            f"{where}: widths must not be negative, got {pad_width!r} for the input {node.dtype}{list(node.shape)} "
            "(to crop, slice: x[1:-1])"
        )
    return Pad([(lo, hi, 0) for lo, hi in pairs])(node)
