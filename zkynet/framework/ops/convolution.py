"""Convolution and pooling over NCHW images, each with its own backward rule (a
transposed convolution; pooling gradients placed by interior padding, no scatter)."""

import functools
import math
import numbers
import operator
from typing import Any

import jax.numpy as jnp
from jax import lax

from zkynet.framework.builder import NodeLike
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Fused, Unary

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "conv2d", "max_pool2d", "avg_pool2d"]

Pair = int | tuple[int, int]
_NCHW = ("NCHW", "OIHW", "NCHW")


def _pair(v, what):
    if isinstance(v, numbers.Integral):
        return int(v), int(v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, numbers.Integral) for i in v):
        return int(v[0]), int(v[1])
    raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")


def _lowest(dtype):
    """The identity of max for `dtype`: -inf, or the smallest integer."""
    return -jnp.inf if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).min


def _padding(padding, size, kernel, stride):
    """Explicit ((top, bottom), (left, right)) padding from an int, a pair, explicit pairs,
    'valid' or 'same' (output size = ceil(input / stride), as TensorFlow)."""
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return (0, 0), (0, 0)
        if padding.lower() != "same":
            raise ValueError(f"padding must be 'same', 'valid', an int or pairs, got {padding!r}")
        pads = []
        for n, k, s in zip(size, kernel, stride, strict=True):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


class Conv2d(Fused):
    """2-D cross-correlation of x (N, C, H, W) with kernels w (O, C, kh, kw)."""

    vjp_uses_out = False
    input_names = ("x", "w")

    def __init__(self, stride=1, padding=0):
        super().__init__()
        self.stride = _pair(stride, "stride")
        self.padding = padding

    def _pads(self, x, w):
        return _padding(self.padding, x.shape[2:], w.shape[2:], self.stride)

    def call(self, x, w):
        if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
            raise ValueError("conv2d needs x (N, C, H, W) and w (O, C, kh, kw) with the same C")
        return lax.conv_general_dilated(x.value, w.value, self.stride, self._pads(x, w), dimension_numbers=_NCHW)

    def vjp(self, g, out, x, w):
        pads = self._pads(x, w)
        dx = dw = None
        if x.requires_grad:  # a transposed convolution: g dilated by the stride, kernel flipped
            back_pads = [
                (k - 1 - lo, n - 1 - (m - 1) * s + lo, s - 1)
                for n, m, k, s, (lo, _) in zip(x.shape[2:], g.shape[2:], w.shape[2:], self.stride, pads, strict=True)
            ]
            flipped = jnp.swapaxes(jnp.flip(w.value, (2, 3)), 0, 1)
            # the dilation and padding as an explicit lax.pad, not the convolution's lhs_dilation:
            # XLA 0.10's CPU simplifier aborts the process on some strided ones (x 4x3, kernel
            # 2x3, stride 2, padding 1: a failed CHECK, jax.vjp of lax.conv too)
            dilated = lax.pad(g, jnp.zeros((), g.dtype), [(0, 0, 0), (0, 0, 0), *back_pads])
            dx = lax.conv_general_dilated(dilated, flipped, (1, 1), ((0, 0), (0, 0)), dimension_numbers=_NCHW)
        if w.requires_grad:  # correlate x with g (dilated by the stride), batch as the sum axis
            dw = lax.conv_general_dilated(
                x.value, g, (1, 1), pads, rhs_dilation=self.stride, dimension_numbers=("CNHW", "IOHW", "CNHW")
            )
            dw = dw[:, :, : w.shape[2], : w.shape[3]]
        return dx, dw


class _Pool2d(Unary):
    """Pooling over kh x kw windows of x (N, C, H, W)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride") if stride is not None else self.kernel
        self.padding = _pair(padding, "padding")

    def _reduce(self, x, init, reducer):
        if x.ndim != 4:
            raise ValueError(f"{self.functional_name} needs x shaped (N, C, H, W)")
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
            return lax.pad(update, jnp.zeros((), update.dtype), ((0, 0, 0), (0, 0, 0), rows, columns))

        total = functools.reduce(operator.add, (placed(*part) for part in parts))
        return total[:, :, ph : ph + x_shape[2], pw : pw + x_shape[3]]


class MaxPool2d(_Pool2d):
    """Max over each window; ties split the gradient evenly."""

    check_integer_overflow = False  # selects elements: cannot overflow

    def call(self, x):
        return self._reduce(x.value, jnp.array(_lowest(x.dtype), x.dtype), lax.max)

    def vjp(self, g, out, x):
        ph, pw = self.padding
        padded = jnp.pad(x.value, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=_lowest(x.dtype))
        hits = [(i, j, window == out) for i, j, window in self._windows(padded, out.shape[2:])]
        count = hits[0][2].astype(g.dtype)
        for _, _, hit in hits[1:]:
            count = count + hit
        share = g / count
        return (self._scatter(((i, j, jnp.where(hit, share, 0)) for i, j, hit in hits), x.shape),)


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


def conv2d(x: NodeLike, w: NodeLike, stride: Pair = 1, padding: Any = 0) -> Node:
    """padding: an int, a pair, explicit ((top, bottom), (left, right)), 'valid' or 'same'."""
    return Conv2d(stride, padding)(x, w)


def max_pool2d(x: NodeLike, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0) -> Node:
    return MaxPool2d(kernel_size, stride, padding)(x)


def avg_pool2d(x: NodeLike, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0) -> Node:
    return AvgPool2d(kernel_size, stride, padding)(x)
