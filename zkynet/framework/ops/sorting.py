"""Sorting: op.sort and op.topk. Both keep the permutation they applied (the node's
`saved`) and send each element's cotangent back to where it came from: an add along the
axis (op.add_along_axis), whose own rule reads the cotangent back (take_along_axis), so
derivatives of derivatives pass through. Ties keep their order (stable), and the
gradient of tied elements goes to the one that was picked, as in JAX."""

import numbers

import jax.numpy as jnp
from jax import lax

from zkynet.framework import xp
from zkynet.framework.builder import NodeLike, as_node
from zkynet.framework.errors import ShapeError, ValueTypeError
from zkynet.framework.graph import Node, OperatorNode
from zkynet.framework.operator import Operator

__all__ = ["Sort", "TopK", "sort", "topk"]


def _check_axis(op, x, axis):
    if x.ndim == 0:
        raise ShapeError(f"{op._where()}: cannot sort a scalar (input {x.dtype}[])")
    if not isinstance(axis, numbers.Integral) or not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"{op._where()}: axis {axis!r} is out of range for the input {x.dtype}{list(x.shape)}")
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise ValueTypeError(f"{op._where()}: complex numbers have no order; sort their real part or abs")


class Sort(Operator):
    """x sorted along `axis`, ascending (descending with `descending`, as jnp.sort)."""

    check_integer_overflow = False  # moves elements
    vjp_uses_inputs = vjp_uses_out = False  # the permutation only (saved)
    input_names = ("x",)

    def __init__(self, axis=-1, descending=False):
        super().__init__()
        self.axis, self.descending = axis, bool(descending)

    def check(self, x):
        _check_axis(self, x, self.axis)

    def forward(self, x):
        """(sorted values, the permutation: the index along `axis` each came from). On nodes
        (derivatives of derivatives) the permutation is recomputed from x's value."""
        value = xp.value_of(x.value)
        axis = int(self.axis) % value.ndim
        iota = lax.broadcasted_iota(jnp.int32, value.shape, axis)
        values, order = lax.sort((value, iota), dimension=axis, num_keys=1, is_stable=True)
        if self.descending:
            values, order = jnp.flip(values, axis), jnp.flip(order, axis)
        return values, order

    def vjp(self, g, out, x, saved=None):
        return (xp.add_along_axis(xp.zeros(x.shape, g.dtype), saved, g, int(self.axis)),)


class TopK(Operator):
    """The k largest elements along the last axis, largest first (lax.top_k)."""

    check_integer_overflow = False  # moves elements
    vjp_uses_inputs = vjp_uses_out = False  # the indices only (saved)
    input_names = ("x",)

    def __init__(self, k):
        super().__init__()
        self.k = k

    def check(self, x):
        _check_axis(self, x, -1)
        if not isinstance(self.k, numbers.Integral) or isinstance(self.k, bool) or not 0 <= int(self.k) <= x.shape[-1]:
            raise ShapeError(
                f"{self._where()}: k={self.k!r} must be an int from 0 to the size of the axis "
                f"({x.shape[-1]}) of the input {x.dtype}{list(x.shape)}"
            )

    def forward(self, x):
        return lax.top_k(xp.value_of(x.value), int(self.k))

    def vjp(self, g, out, x, saved=None):
        return (xp.add_along_axis(xp.zeros(x.shape, g.dtype), saved, g, -1),)


def sort(x: NodeLike, axis: int = -1, descending: bool = False) -> Node:
    """x sorted along `axis` (stable); the gradient of each element goes back to its place."""
    return Sort(axis, descending)(x)


def topk(x: NodeLike, k: int, axis: int = -1) -> tuple[Node, "jnp.ndarray"]:
    """(the k largest elements along `axis`, largest first, as a node; their integer
    indices along `axis`, an array: no gradient). op.take_along_axis(x, indices, axis)
    reads them again. k must be at most the axis' size."""
    node = as_node(x)
    moved = axis not in (-1, node.ndim - 1)
    if moved:
        _check_axis(TopK(k), node, axis)
        node = xp.moveaxis(node, axis, -1)
    values = TopK(k)(node)
    indices = values.saved if isinstance(values, OperatorNode) else None
    if indices is None:  # built inside cg.no_grad(), which keeps nothing: read them again
        indices = lax.top_k(node.value, int(k))[1]
    if moved:
        values, indices = xp.moveaxis(values, -1, axis), jnp.moveaxis(indices, -1, axis)
    return values, indices
