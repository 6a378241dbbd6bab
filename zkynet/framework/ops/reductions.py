"""Reductions over axes (sum, mean, max, logsumexp), and the normalizations built on
them: softmax and log-softmax (computed in log space), layer normalization."""

import math
import numbers
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from zkynet.framework import xp
from zkynet.framework.builder import NodeLike
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Unary

__all__ = [
    "Sum",
    "Mean",
    "Max",
    "Min",
    "Prod",
    "Logsumexp",
    "LogSoftmax",
    "Softmax",
    "LayerNorm",
    "RmsNorm",
    "sum",
    "mean",
    "max",
    "min",
    "prod",
    "logsumexp",
    "softmax",
    "log_softmax",
    "layer_norm",
    "rms_norm",
]

Axis = int | Sequence[int] | None


def _axes(axis, ndim):
    """`axis` (None, int or sequence, negatives allowed) as a sorted tuple of axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    outside = [a for a in axes if not -ndim <= a < ndim]
    if outside:
        raise ValueError(f"axis {outside[0]} is out of range for a value of {ndim} dimension(s)")
    return tuple(sorted(int(a) + ndim if a < 0 else int(a) for a in axes))


class _Reduction(Unary):
    def __init__(self, axis=None, keepdims=False):
        super().__init__()
        self.axis = axis
        self.keepdims = keepdims

    def check(self, x):
        _axes(self.axis, x.ndim)  # an axis out of range: named here, not as JAX's IndexError

    def _unreduce(self, y, x):
        """`y`, shaped like this reduction's output, made broadcastable against `x`."""
        return y if self.keepdims else xp.expand_dims(y, _axes(self.axis, x.ndim))


class Sum(_Reduction):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = False
    vjp_uses_out = False

    def call(self, x):
        return jnp.sum(x.value, axis=self.axis, keepdims=self.keepdims)

    def vjp(self, g, out, x):
        return (xp.broadcast_to(self._unreduce(g, x), x.shape),)


class Mean(_Reduction):
    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_inputs = False
    vjp_uses_out = False

    def call(self, x):
        return jnp.mean(x.value, axis=self.axis, keepdims=self.keepdims)

    def vjp(self, g, out, x):
        count = math.prod(x.shape[a] for a in _axes(self.axis, x.ndim))
        return (xp.broadcast_to(self._unreduce(g, x) / count, x.shape),)


class Max(_Reduction):
    """Largest element; ties split the gradient evenly (as JAX does)."""

    check_integer_overflow = False  # selects or moves elements: cannot overflow

    def call(self, x):
        return jnp.max(x.value, axis=self.axis, keepdims=self.keepdims)

    def vjp(self, g, out, x):
        hits = xp.astype(xp.equal(xp.value_of(x.value), self._unreduce(xp.value_of(out), x)), g.dtype)
        share = hits / jnp.sum(hits, axis=_axes(self.axis, x.ndim), keepdims=True)  # constant: the tied places
        return (share * self._unreduce(g, x),)


class Min(Max):
    """Smallest element; ties split the gradient evenly (as JAX does)."""

    def call(self, x):
        return jnp.min(x.value, axis=self.axis, keepdims=self.keepdims)


class Prod(_Reduction):
    """Product of the elements. Its rule multiplies g by the product of all the *other*
    elements of each reduced slice, computed as exclusive running products from the left
    and from the right (no division: exact with zeros, however many), so the rule is a
    product of x's elements and differentiates again through them."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)

    def call(self, x):
        return jnp.prod(x.value, axis=self.axis, keepdims=self.keepdims)

    def vjp(self, g, out, x):
        axes = _axes(self.axis, x.ndim)
        kept = [a for a in range(x.ndim) if a not in axes]
        order = kept + list(axes)
        value = x.value
        if order != list(range(x.ndim)):
            value = xp.transpose(value, order)
        size = math.prod(x.shape[a] for a in axes)
        if size == 0:
            return (xp.zeros(x.shape, g.dtype),)
        flat = xp.reshape(value, [x.shape[a] for a in kept] + [size])
        others = _exclusive_product(flat, reverse=False) * _exclusive_product(flat, reverse=True)
        others = xp.reshape(others, [x.shape[a] for a in order])
        if order != list(range(x.ndim)):
            others = xp.transpose(others, [int(a) for a in np.argsort(order)])
        return (others * self._unreduce(g, x),)


def _exclusive_product(x, reverse):
    """The product of the elements before each one along the last axis (after it, with
    `reverse`); 1 at the first (last) place."""
    ones = jnp.ones((*x.shape[:-1], 1), x.dtype)
    running = xp.cumprod(x, -1, reverse=reverse)
    if reverse:
        return xp.concatenate([running[..., 1:], ones], axis=-1)
    return xp.concatenate([ones, running[..., :-1]], axis=-1)


def _log_normalizer(x, axis):
    """(shift, x - shift, log(sum(exp(x - shift)))) over `axis`, kept as size-1 dims; the
    shift is the max, so exp never overflows and huge logits lose no precision. The shift
    cancels out of every result, so on nodes it is a constant (an array of x's value)."""
    shift = jnp.max(xp.value_of(x), axis=axis, keepdims=True)
    shift = jnp.where(jnp.isfinite(shift), shift, 0)
    shifted = x - shift
    return shift, shifted, xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


class Logsumexp(_Reduction):
    def call(self, x):
        axes = _axes(self.axis, x.ndim)
        shift, _, log_total = _log_normalizer(x.value, axes)
        out = shift + log_total
        return out if self.keepdims else jnp.squeeze(out, axes)

    def vjp(self, g, out, x):
        return (self._unreduce(g, x) * xp.exp(x.value - self._unreduce(out, x)),)


class LogSoftmax(Unary):
    """x - logsumexp(x): log-probabilities along `axis`, never exponentiated first."""

    vjp_uses_inputs = False

    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis

    def call(self, x):
        _, shifted, log_total = _log_normalizer(x.value, _axes(self.axis, x.ndim))
        return shifted - log_total

    def vjp(self, g, out, x):
        return (g - xp.exp(out) * xp.sum(g, axis=self.axis, keepdims=True),)


class Softmax(LogSoftmax):
    """exp(log_softmax(x)): probabilities along `axis`, computed in log space."""

    vjp_uses_inputs = False

    def call(self, x):
        return jnp.exp(super().call(x))

    def vjp(self, g, out, x):
        return (out * (g - xp.sum(g * out, axis=self.axis, keepdims=True)),)


class LayerNorm(Unary):
    """(x - mean) / sqrt(var + eps) over `axis` (the last by default; several for batch
    normalization; the affine part is the module's).

    Means are taken around each slice's first element (x - x0 first): a constant slice is
    then centered to exact zeros, where float32's rounded mean left +-ulp residues that
    1/sqrt(eps) magnified (and a large offset loses no precision to the subtraction).
    The rule, with r = 1/sqrt(var + eps), is r (g - mean(g) - out mean(g out)), g's mean
    also taken around its first element: a constant row's output is exactly 0, so a
    uniform g there gives exactly 0 (the old rule gave rounding times 1/sqrt(eps), -4.0e-5
    in the fuzz). For n = 2 elements per slice the output is +-1 up to eps, where that
    form cancels catastrophically (2.1e-4 relative in the fuzz); the exact
    (g - mean(g)) eps r^3 is used instead (and 0 for n = 1)."""

    def __init__(self, eps=1e-5, axis=-1):
        super().__init__()
        self.eps = eps
        self.axis = axis

    def _centered(self, x, axes):
        """x minus its mean over `axes`, the mean taken around each slice's first element."""
        shifted = _from_first(x, axes)
        return shifted - xp.mean(shifted, axis=axes, keepdims=True)

    def call(self, x):
        axes = _axes(self.axis, x.ndim)
        centered = self._centered(x.value, axes)
        return centered * lax.rsqrt(jnp.mean(centered * centered, axis=axes, keepdims=True) + self.eps)

    def vjp(self, g, out, x):
        axes = _axes(self.axis, x.ndim)
        count = math.prod(x.shape[a] for a in axes)
        if count == 1:  # the output is 0 whatever x is
            return (xp.zeros(x.shape, g.dtype),)
        centered = self._centered(x.value, axes)
        inv_std = xp.rsqrt(xp.mean(centered * centered, axis=axes, keepdims=True) + self.eps)
        centered_g = self._centered(g, axes)  # g's mean around its first element: exact for a uniform g
        if count == 2:
            return (centered_g * (self.eps * inv_std * inv_std * inv_std),)
        return (inv_std * (centered_g - out * xp.mean(g * out, axis=axes, keepdims=True)),)


def _from_first(x, axes):
    """x minus the first element of each slice over `axes` (kept as size-1 axes)."""
    first = x[tuple(slice(0, 1) if a in axes else slice(None) for a in range(x.ndim))]
    return x - first


class RmsNorm(Unary):
    """x / sqrt(mean(x^2) + eps) over the last axis (the scale is the module's: layers.RMSNorm)."""

    def __init__(self, eps=1e-6):
        super().__init__()
        self.eps = eps

    def call(self, x):
        return x.value * lax.rsqrt(jnp.mean(x.value * x.value, axis=-1, keepdims=True) + self.eps)

    def vjp(self, g, out, x):
        inv_rms = xp.rsqrt(xp.mean(x.value * x.value, axis=-1, keepdims=True) + self.eps)
        if x.shape[-1] == 1:  # out = x / sqrt(x^2 + eps): its slope eps / (x^2 + eps)^1.5, without cancellation
            return (g * (self.eps * inv_rms * inv_rms * inv_rms),)
        return (inv_rms * (g - out * xp.mean(g * out, axis=-1, keepdims=True)),)


# ----------------------------------------------------------------------------- what models call


def sum(x: NodeLike, axis: Axis = None, keepdims: bool = False) -> Node:
    return Sum(axis, keepdims)(x)


def mean(x: NodeLike, axis: Axis = None, keepdims: bool = False) -> Node:
    return Mean(axis, keepdims)(x)


def max(x: NodeLike, axis: Axis = None, keepdims: bool = False) -> Node:
    return Max(axis, keepdims)(x)


def min(x: NodeLike, axis: Axis = None, keepdims: bool = False) -> Node:
    return Min(axis, keepdims)(x)


def prod(x: NodeLike, axis: Axis = None, keepdims: bool = False) -> Node:
    return Prod(axis, keepdims)(x)


def logsumexp(x: NodeLike, axis: Axis = None, keepdims: bool = False) -> Node:
    return Logsumexp(axis, keepdims)(x)


def softmax(x: NodeLike, axis: int = -1) -> Node:
    return Softmax(axis)(x)


def log_softmax(x: NodeLike, axis: int = -1) -> Node:
    return LogSoftmax(axis)(x)


def layer_norm(x: NodeLike, eps: float = 1e-5, axis: Axis = -1) -> Node:
    """(x - mean) / sqrt(var + eps) over `axis` (the last by default; a tuple for several)."""
    return LayerNorm(eps, axis)(x)


def rms_norm(x: NodeLike, eps: float = 1e-6) -> Node:
    """x / sqrt(mean(x^2) + eps) over the last axis."""
    return RmsNorm(eps)(x)
