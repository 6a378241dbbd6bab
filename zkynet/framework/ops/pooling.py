"""Pooling over windows of x (N, C, H, W): max_pool2d and avg_pool2d, each with its own
backward rule written with xp, so that derivatives of derivatives pass through them.
Pooling places its gradients by interior padding (op.pad's general form), never by a
scatter. (Also importable from convolution.py, where they lived first.)
"""

import functools
import math
import operator

import jax.numpy as jnp
from jax import lax

from zkynet.framework import xp
from zkynet.framework.builder import NodeLike
from zkynet.framework.errors import ShapeError
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Unary
from zkynet.framework.ops.window_arguments import _pair

__all__ = [
    "MaxPool2d",
    "AvgPool2d",
    "max_pool2d",
    "avg_pool2d",
]

Pair = int | tuple[int, int]


def _lowest(dtype):
    """The identity of max for `dtype`: -inf, or the smallest integer."""
    return -jnp.inf if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).min


def _describe(node):
    return f"{node.dtype}{list(node.shape)}"


class _Pool2d(Unary):
    """Pooling over kh x kw windows of x (N, C, H, W)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride") if stride is not None else self.kernel
        self.padding = _pair(padding, "padding")

    def check(self, x):
        where = f"{self._where()}: cannot apply to the input {_describe(x)}"
        if x.ndim != 4:
            raise ShapeError(f"{where}: {self.functional_name} takes x shaped (N, C, H, W)")
        if min(self.kernel + self.stride) < 1 or min(self.padding) < 0:
            raise ShapeError(f"{where}: kernel and stride must be >= 1 and padding >= 0")
        if any(k > n + 2 * p for k, n, p in zip(self.kernel, x.shape[2:], self.padding, strict=True)):
            raise ShapeError(
                f"{where}: the {self.kernel} window does not fit the padded input (padding {self.padding})"
            )

    def _reduce(self, x, init, reducer):
        pads = ((0, 0), (0, 0)) + tuple((p, p) for p in self.padding)
        return lax.reduce_window(x, init, reducer, (1, 1) + self.kernel, (1, 1) + self.stride, pads)

    def _windows(self, padded, out_hw):
        """(i, j, the (N, C, Ho, Wo) slice of `padded` at offset (i, j) of every window)."""
        (sh, sw), (ho, wo) = self.stride, out_hw
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                yield i, j, padded[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]

    def _scatter(self, parts, x_shape):
        """Sum the per-offset (i, j, update) back into x's shape: strided placement via
        interior padding (no scatter), then drop the pooling padding."""
        (sh, sw), (ph, pw) = self.stride, self.padding
        hp, wp = x_shape[2] + 2 * ph, x_shape[3] + 2 * pw

        def placed(i, j, update):
            ho, wo = update.shape[2:]
            rows, columns = (i, hp - i - sh * (ho - 1) - 1, sh - 1), (j, wp - j - sw * (wo - 1) - 1, sw - 1)
            return xp.pad(update, ((0, 0, 0), (0, 0, 0), rows, columns))

        total = functools.reduce(operator.add, (placed(*part) for part in parts))
        return total[:, :, ph : ph + x_shape[2], pw : pw + x_shape[3]]


class MaxPool2d(_Pool2d):
    """Max over each window; ties split the gradient evenly. The rule is linear in g with a
    mask of the windows' maxima (a constant), so it runs on nodes as it is."""

    check_integer_overflow = False  # selects elements: cannot overflow

    def call(self, x):
        return self._reduce(x.value, jnp.array(_lowest(x.dtype), x.dtype), lax.max)

    def vjp(self, g, out, x):
        ph, pw = self.padding
        value = xp.value_of(x.value)  # where the maxima are: no gradient of its own
        padded = jnp.pad(value, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=_lowest(x.dtype))
        hits = [(i, j, window == xp.value_of(out)) for i, j, window in self._windows(padded, out.shape[2:])]
        count = hits[0][2].astype(g.dtype)
        for _, _, hit in hits[1:]:
            count = count + hit
        share = g / count
        return (self._scatter(((i, j, xp.where(hit, share, 0)) for i, j, hit in hits), x.shape),)


class AvgPool2d(_Pool2d):
    """Mean over each window (padding counts as zeros, as PyTorch's default)."""

    vjp_uses_inputs = False
    vjp_uses_out = False

    def call(self, x):
        return self._reduce(x.value, jnp.array(0, x.dtype), lax.add) / math.prod(self.kernel)

    def vjp(self, g, out, x):
        share = g / math.prod(self.kernel)
        offsets = ((i, j) for i in range(self.kernel[0]) for j in range(self.kernel[1]))
        return (self._scatter(((i, j, share) for i, j in offsets), x.shape),)


def max_pool2d(x: NodeLike, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0) -> Node:
    return MaxPool2d(kernel_size, stride, padding)(x)


def avg_pool2d(x: NodeLike, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0) -> Node:
    return AvgPool2d(kernel_size, stride, padding)(x)
