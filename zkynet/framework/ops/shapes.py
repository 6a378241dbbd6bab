"""Operators that only move elements: reshape, transpose, broadcast, concat, stack."""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from zkynet.framework.builder import NodeLike
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Fused, Unary

__all__ = [
    "Reshape",
    "Transpose",
    "BroadcastTo",
    "Concat",
    "Stack",
    "reshape",
    "transpose",
    "broadcast_to",
    "concat",
    "stack",
]


class Reshape(Unary):
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
        return (jnp.reshape(g, x.shape),)


class Transpose(Unary):
    """Permute axes (reverse them by default)."""

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
            return (jnp.transpose(g),)
        return (jnp.transpose(g, [int(a) for a in np.argsort([a % x.ndim for a in self.axes])]),)


class BroadcastTo(Unary):
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
        return tuple(jnp.split(g, ends[:-1], axis=self.axis))


class Stack(Fused):
    """Join inputs along a new axis."""

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
        g = jnp.moveaxis(g, self.axis, 0)
        return tuple(g[i] for i in range(len(xs)))


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
