"""Elementwise operators. Binary ones broadcast like NumPy; their vjp may return
cotangents with broadcast dimensions, which the graph sums back to each input's shape."""

import math
from typing import Any

import jax
import jax.numpy as jnp

from zkynet.framework import xp
from zkynet.framework.builder import NodeLike, as_node
from zkynet.framework.errors import ValueTypeError
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Binary, Fused, Unary

__all__ = [
    "Add",
    "Sub",
    "Mult",
    "Div",
    "Pow",
    "Maximum",
    "Minimum",
    "Where",
    "Neg",
    "Square",
    "Sqrt",
    "Exp",
    "Log",
    "Abs",
    "Sign",
    "Tanh",
    "Sigmoid",
    "Softplus",
    "Relu",
    "LeakyRelu",
    "Gelu",
    "Sin",
    "Cos",
    "Erf",
    "Conj",
    "Real",
    "Astype",
    "add",
    "sub",
    "mult",
    "div",
    "pow",
    "maximum",
    "minimum",
    "where",
    "neg",
    "square",
    "sqrt",
    "exp",
    "log",
    "abs",
    "sign",
    "tanh",
    "sigmoid",
    "softplus",
    "relu",
    "leaky_relu",
    "gelu",
    "sin",
    "cos",
    "erf",
    "conj",
    "real",
    "astype",
]


# ----------------------------------------------------------------------------- binary


class Add(Binary):
    """a + b"""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = False
    vjp_uses_out = False
    fuse_vjp = False

    def call(self, a, b):
        return a.value + b.value

    def vjp(self, g, out, a, b):
        return g, g


class Sub(Binary):
    """a - b"""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = False
    vjp_uses_out = False
    fuse_vjp = False

    def call(self, a, b):
        return a.value - b.value

    def vjp(self, g, out, a, b):
        return g, -g


class Mult(Binary):
    """a * b, elementwise"""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_out = False

    def call(self, a, b):
        return a.value * b.value

    def vjp(self, g, out, a, b):
        return g * b.value, g * a.value


class Div(Binary):
    """a / b"""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)

    def call(self, a, b):
        return a.value / b.value

    def vjp(self, g, out, a, b):
        return g / b.value, -g * out / b.value


class Pow(Binary):
    """a ** b; d/db uses log(a), so it is defined for a > 0 (0 where a == 0, like JAX)."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)

    def call(self, a, b):
        return a.value**b.value

    def vjp(self, g, out, a, b):
        x, y = a.value, b.value
        da = g * xp.where(xp.equal(y, 0), 0, y * x ** (y - 1)) if a.requires_grad else None
        db = g * xp.log(xp.where(xp.equal(x, 0), 1, x)) * out if b.requires_grad else None
        return da, db


class Maximum(Binary):
    """Elementwise max; ties split the gradient evenly (as JAX does)."""

    check_integer_overflow = False  # selects or moves elements: cannot overflow
    vjp_uses_out = False

    def call(self, a, b):
        return jnp.maximum(a.value, b.value)

    def vjp(self, g, out, a, b):
        share = xp.where(a.value > b.value, 1.0, xp.where(xp.equal(a.value, b.value), 0.5, 0.0))
        return g * share, g * (1 - share)


class Minimum(Binary):
    """Elementwise min; ties split the gradient evenly (as JAX does)."""

    check_integer_overflow = False  # selects or moves elements: cannot overflow
    vjp_uses_out = False

    def call(self, a, b):
        return jnp.minimum(a.value, b.value)

    def vjp(self, g, out, a, b):
        share = xp.where(a.value < b.value, 1.0, xp.where(xp.equal(a.value, b.value), 0.5, 0.0))
        return g * share, g * (1 - share)


class Where(Fused):
    """`a` where `condition` holds, else `b` (the condition gets no gradient)."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # selects or moves elements: cannot overflow
    vjp_uses_out = False
    input_names = ("condition", "a", "b")

    def call(self, c, a, b):
        return jnp.where(c.value, a.value, b.value)

    def vjp(self, g, out, c, a, b):
        return None, xp.where(c.value, g, 0), xp.where(c.value, 0, g)


# ----------------------------------------------------------------------------- unary


class Neg(Unary):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = False
    vjp_uses_out = False
    fuse_vjp = False

    def call(self, x):
        return -x.value

    def vjp(self, g, out, x):
        return (-g,)


class Square(Unary):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_out = False

    def call(self, x):
        return x.value * x.value

    def vjp(self, g, out, x):
        return (2 * x.value * g,)


class Sqrt(Unary):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = False

    def call(self, x):
        return jnp.sqrt(x.value)

    def vjp(self, g, out, x):
        return (g * 0.5 / out,)


class Exp(Unary):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = False

    def call(self, x):
        return jnp.exp(x.value)

    def vjp(self, g, out, x):
        return (g * out,)


class Log(Unary):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_out = False

    def call(self, x):
        return jnp.log(x.value)

    def vjp(self, g, out, x):
        return (g / x.value,)


class Abs(Unary):
    """|x|; for complex x its rule is g conj(x) / |x|, JAX's convention (zkynet/framework/ops/__init__.py)."""

    complex_rule = True
    vjp_uses_out = False

    def call(self, x):
        return jnp.abs(x.value)

    def vjp(self, g, out, x):
        if jnp.issubdtype(x.dtype, jnp.complexfloating):
            size = xp.abs(x.value)
            return (g * xp.conj(x.value) / xp.where(xp.equal(size, 0), 1, size),)
        return (g * xp.sign(x.value),)


class Sign(Unary):
    """-1, 0 or 1: piecewise constant, so no gradient (what Abs's rule multiplies by)."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = vjp_uses_out = False
    fuse_vjp = False

    def call(self, x):
        return jnp.sign(x.value)

    def vjp(self, g, out, x):
        return (None,)


class Tanh(Unary):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = False

    def call(self, x):
        return jnp.tanh(x.value)

    def vjp(self, g, out, x):
        return (g * (1 - out * out),)


class Sigmoid(Unary):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = False

    def call(self, x):
        return jax.nn.sigmoid(x.value)

    def vjp(self, g, out, x):
        return (g * out * (1 - out),)


class Softplus(Unary):
    """log(1 + exp(x)), computed without overflow; its derivative is sigmoid(x)."""

    vjp_uses_out = False

    def call(self, x):
        return jnp.maximum(x.value, 0) + jnp.log1p(jnp.exp(-jnp.abs(x.value)))

    def vjp(self, g, out, x):
        return (g * xp.sigmoid(x.value),)


class Relu(Unary):
    check_integer_overflow = False  # selects or moves elements: cannot overflow
    vjp_uses_out = False

    def call(self, x):
        return jnp.maximum(x.value, 0)

    def vjp(self, g, out, x):
        return (xp.where(x.value > 0, g, 0),)


class LeakyRelu(Unary):
    """x for x >= 0, else negative_slope * x."""

    vjp_uses_out = False

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def call(self, x):
        return jnp.where(x.value >= 0, x.value, self.negative_slope * x.value)

    def vjp(self, g, out, x):
        return (xp.where(x.value >= 0, g, self.negative_slope * g),)


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


class Gelu(Unary):
    """x * Phi(x) (exact, as PyTorch's default) or its tanh approximation
    (`approximate=True`, or PyTorch's spelling "tanh"; "none" means exact).
    The exact backward reads Phi(x) off the output (out / x) instead of evaluating
    erf again: erf is the costliest elementwise function of a transformer step on CPU."""

    def __init__(self, approximate=False):
        super().__init__()
        if approximate not in (True, False, "tanh", "none"):
            raise ValueError(f"gelu approximate must be True/False, 'tanh' or 'none', got {approximate!r}")
        self.approximate = approximate in (True, "tanh")

    def call(self, x):
        x = x.value
        if self.approximate:
            return 0.5 * x * (1 + jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + jax.scipy.special.erf(x / math.sqrt(2)))

    def vjp(self, g, out, x):
        x = x.value
        if self.approximate:
            t = xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))
            slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
        else:  # out / x is Phi(x) within rounding (x != 0); Phi(0) = 1/2
            cdf = xp.where(xp.equal(x, 0), 0.5, out / xp.where(xp.equal(x, 0), 1, x))
            slope = cdf + x * xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return (g * slope,)


class Sin(Unary):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_out = False

    def call(self, x):
        return jnp.sin(x.value)

    def vjp(self, g, out, x):
        return (g * xp.cos(x.value),)


class Cos(Unary):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_out = False

    def call(self, x):
        return jnp.cos(x.value)

    def vjp(self, g, out, x):
        return (-(g * xp.sin(x.value)),)


_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


class Erf(Unary):
    """The error function 2/sqrt(pi) * integral of exp(-t^2) from 0 to x."""

    vjp_uses_out = False

    def call(self, x):
        return jax.scipy.special.erf(x.value)

    def vjp(self, g, out, x):
        return (g * (_TWO_OVER_SQRT_PI * xp.exp(-(x.value * x.value))),)


class Conj(Unary):
    """The complex conjugate (x itself for real x); its rule conjugates g (JAX's convention)."""

    complex_rule = True
    check_integer_overflow = False
    vjp_uses_inputs = vjp_uses_out = False

    def call(self, x):
        return jnp.conj(x.value)

    def vjp(self, g, out, x):
        return (xp.conj(g),)


class Real(Unary):
    """The real part (x itself for real x); a real g goes back as a complex one."""

    complex_rule = True
    check_integer_overflow = False
    vjp_uses_inputs = vjp_uses_out = False

    def call(self, x):
        return jnp.real(x.value)

    def vjp(self, g, out, x):
        return (xp.astype(g, x.dtype) if jnp.issubdtype(x.dtype, jnp.complexfloating) else g,)


class Astype(Unary):
    """x in another dtype; the cotangent goes back in x's own (how mixed precision
    hands a bfloat16 model's output to a float32 loss)."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = False  # the input's dtype only
    vjp_uses_out = False
    fuse_vjp = False

    def __init__(self, dtype):
        super().__init__()
        self.dtype = jnp.dtype(dtype)

    def call(self, x):
        return x.value.astype(self.dtype)

    def vjp(self, g, out, x):
        if not jnp.issubdtype(x.dtype, jnp.inexact):  # an integer's gradient stays a float (graph.py)
            return (g,)
        if jnp.issubdtype(g.dtype, jnp.complexfloating) and not jnp.issubdtype(x.dtype, jnp.complexfloating):
            g = xp.real(g)  # complex -> real: the real part, as JAX's convention
        return (xp.astype(g, x.dtype),)


# ----------------------------------------------------------------------------- what models call

add, sub, mult, div, pow = Add(), Sub(), Mult(), Div(), Pow()
maximum, minimum, where = Maximum(), Minimum(), Where()
neg, square, sqrt, exp, log, abs, sign = Neg(), Square(), Sqrt(), Exp(), Log(), Abs(), Sign()
tanh, sigmoid, softplus, relu = Tanh(), Sigmoid(), Softplus(), Relu()
sin, cos, erf = Sin(), Cos(), Erf()
conj, real = Conj(), Real()


def leaky_relu(x: NodeLike, negative_slope: float = 0.01) -> Node:
    return LeakyRelu(negative_slope)(x)


def gelu(x: NodeLike, approximate: bool | str = False) -> Node:
    return Gelu(approximate)(x)


def astype(x: NodeLike, dtype: Any) -> Node:
    """`x` in `dtype` (`x` itself when it already is)."""
    node = as_node(x)
    try:
        wanted = jnp.dtype(dtype)
    except TypeError:
        raise ValueTypeError(f"astype: {dtype!r} is not a dtype (e.g. 'float32', jnp.bfloat16, 'int32')") from None
    return node if node.dtype == wanted else Astype(dtype)(node)
