"""Comparisons: boolean results, which carry no gradient (what masks and `op.where`
conditions are made of; `x > 0` on nodes is `op.greater(x, 0)`). A node's `==` is
its identity (nodes are dict keys), so equality is `op.equal(a, b)`."""

import jax.numpy as jnp

from zkynet.framework.ops.base import Binary

__all__ = [
    "Equal",
    "NotEqual",
    "Less",
    "LessEqual",
    "Greater",
    "GreaterEqual",
    "equal",
    "not_equal",
    "less",
    "less_equal",
    "greater",
    "greater_equal",
]


class _Comparison(Binary):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # a boolean result cannot overflow
    vjp_uses_inputs = vjp_uses_out = False
    fuse_vjp = False

    def vjp(self, g, out, a, b):
        return None, None  # piecewise constant: zero almost everywhere, and undefined at the steps


class Equal(_Comparison):
    def call(self, a, b):
        return jnp.equal(a.value, b.value)


class NotEqual(_Comparison):
    def call(self, a, b):
        return jnp.not_equal(a.value, b.value)


class Less(_Comparison):
    def call(self, a, b):
        return jnp.less(a.value, b.value)


class LessEqual(_Comparison):
    def call(self, a, b):
        return jnp.less_equal(a.value, b.value)


class Greater(_Comparison):
    def call(self, a, b):
        return jnp.greater(a.value, b.value)


class GreaterEqual(_Comparison):
    def call(self, a, b):
        return jnp.greater_equal(a.value, b.value)


equal, not_equal, less, less_equal, greater, greater_equal = (
    Equal(),
    NotEqual(),
    Less(),
    LessEqual(),
    Greater(),
    GreaterEqual(),
)
