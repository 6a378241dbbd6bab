"""Running totals along an axis: op.cumsum."""

import numbers

import jax.numpy as jnp
from jax import lax

from zkynet.framework import xp
from zkynet.framework.builder import NodeLike, as_node
from zkynet.framework.errors import ShapeError, ValueTypeError
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Unary

__all__ = ["Cumsum", "cumsum"]


class Cumsum(Unary):
    """The running sum along `axis` (from the last element backwards with `reverse`). Its
    transpose is the running sum the other way, so the rule is a Cumsum too."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = vjp_uses_out = False

    def __init__(self, axis, reverse=False):
        super().__init__()
        self.axis, self.reverse = axis, bool(reverse)

    def check(self, x):
        if not isinstance(self.axis, numbers.Integral) or not -x.ndim <= self.axis < x.ndim:
            raise ShapeError(
                f"{self._where()}: axis {self.axis!r} is out of range for the input {x.dtype}{list(x.shape)}"
            )
        if x.dtype == jnp.bool_:
            raise ValueTypeError(f"{self._where()}: cumsum of booleans: convert them first, e.g. op.astype(x, int)")

    def call(self, x):
        return lax.cumsum(x.value, int(self.axis) % x.ndim, reverse=self.reverse)

    def vjp(self, g, out, x):
        return (xp.cumsum(g, int(self.axis), reverse=not self.reverse),)


def cumsum(x: NodeLike, axis: int | None = None, reverse: bool = False) -> Node:
    """The running sum of x along `axis` (None: of x flattened, as jnp.cumsum), from the end
    with `reverse`."""
    node = as_node(x)
    if axis is None:
        return Cumsum(0, reverse)(xp.reshape(node, (node.size,)))
    return Cumsum(axis, reverse)(node)
