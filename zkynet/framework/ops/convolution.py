"""Convolution, with its own backward rule written with xp, so that derivatives of
derivatives pass through it.

One general operator, ConvGeneral (lax.conv_general_dilated: N spatial axes, strides,
explicit padding, kernel dilation, feature and batch groups, any dimension numbers),
carries the rule; its input- and kernel-gradients are ConvGenerals themselves
(transposed convolutions), so the rule differentiates again with the same rule.
conv1d/conv2d/conv3d (PyTorch layouts NCL/NCHW/NCDHW, OIL/OIHW/OIDHW kernels) and the
transposed convolutions are built on it. Pooling, which lived here first, is pooling.py's
(its names are importable from here too); the arguments both take (strides, padding,
dilation) are read by window_arguments.py.

A strided input is never dilated with the convolution's own lhs_dilation: XLA 0.10's CPU
simplifier aborts the process (a failed CHECK) on some strided lhs_dilation convolutions
(x 4x3, kernel 2x3, stride 2, padding 1 is one; jax.vjp of lax.conv dies on it too), so
every dilation of an input here is an explicit interior pad.
"""

import numbers
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from zkynet.framework import xp
from zkynet.framework.builder import NodeLike, as_node
from zkynet.framework.errors import ShapeError, ValueTypeError
from zkynet.framework.graph import Node, context
from zkynet.framework.ops.base import Fused
from zkynet.framework.ops.pooling import AvgPool2d, MaxPool2d, avg_pool2d, max_pool2d
from zkynet.framework.ops.window_arguments import _dilated, _padding, _tuple
from zkynet.framework.ops.window_arguments import _pair as _pair  # read by tests from here, as before

__all__ = [
    "ConvGeneral",
    "MaxPool2d",
    "AvgPool2d",
    "conv_general",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "max_pool2d",
    "avg_pool2d",
]

Spec = tuple[int, ...]


def _swap01(spec: Sequence[int]) -> Spec:
    """A dimension spec with its first two entries swapped (batch <-> feature, out <-> in)."""
    return (spec[1], spec[0], *spec[2:])


def _split_axis(x, axis, parts):
    """`x` with axis `axis` split into (parts, size // parts), parts major."""
    shape = list(x.shape)
    shape[axis : axis + 1] = [parts, shape[axis] // parts]
    return xp.reshape(x, shape)


def _merge_axis(x, source, destination):
    """`x` with axis `source` merged into axis `destination` (counted without `source`),
    `source` major: lax.reshape with a permutation."""
    order = [a for a in range(x.ndim) if a != source]
    order.insert(destination, source)
    shape = [n for a, n in enumerate(x.shape) if a != source]
    shape[destination] *= x.shape[source]
    if order != list(range(x.ndim)):
        x = xp.transpose(x, order)
    return xp.reshape(x, shape)


class ConvGeneral(Fused):
    """Cross-correlation of x with kernels w over N spatial axes, as lax.conv_general_dilated
    without lhs_dilation: `strides`, explicit (low, high) `padding` per spatial axis
    (negative crops), kernel dilation `rhs_dilation`, `feature_group_count` (grouped and
    depthwise convolutions) or `batch_group_count` (what a grouped convolution's kernel
    gradient is), and `dimension_numbers` (lax.ConvDimensionNumbers: where batch, feature
    and spatial axes sit in x, w and the output).

    Its rule: the input's cotangent is g dilated by the strides (an explicit interior pad)
    and correlated with the spatially flipped kernels, in/out swapped by the dimension
    numbers; the kernels' cotangent correlates x with g, the batch as the summed axis,
    strides and kernel dilation trading places. Both are ConvGenerals, so the rule runs on
    nodes as well (derivatives of derivatives)."""

    vjp_uses_out = False
    input_names = ("x", "w")

    def __init__(
        self,
        strides: Sequence[int],
        padding: Sequence[tuple[int, int]],
        rhs_dilation: Sequence[int],
        dimension_numbers: Any,
        feature_group_count: int = 1,
        batch_group_count: int = 1,
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.strides = tuple(int(s) for s in strides)
        self.padding = tuple((int(lo), int(hi)) for lo, hi in padding)
        self.rhs_dilation = tuple(int(d) for d in rhs_dilation)
        lhs, rhs, out = dimension_numbers
        self.dimension_numbers = lax.ConvDimensionNumbers(
            tuple(int(a) for a in lhs), tuple(int(a) for a in rhs), tuple(int(a) for a in out)
        )
        self.feature_group_count = int(feature_group_count)
        self.batch_group_count = int(batch_group_count)

    def check(self, x, w):
        lhs, rhs, _ = self.dimension_numbers
        spatial = len(self.strides)
        where = f"{self._where()}: cannot apply to inputs {_describe(x)} and {_describe(w)}"
        if x.ndim != spatial + 2 or w.ndim != spatial + 2:
            raise ShapeError(f"{where}: a convolution over {spatial} spatial axes takes inputs with {spatial + 2} axes")
        if not (len(self.padding) == len(self.rhs_dilation) == spatial):
            raise ShapeError(f"{where}: give one stride, padding pair and dilation per spatial axis")
        if min(self.strides + self.rhs_dilation, default=1) < 1:
            raise ShapeError(f"{where}: strides and dilations must be >= 1, got {self.strides}, {self.rhs_dilation}")
        groups, batch_groups = self.feature_group_count, self.batch_group_count
        if groups < 1 or batch_groups < 1 or (groups > 1 and batch_groups > 1):
            raise ShapeError(f"{where}: groups must be >= 1, and feature and batch groups cannot both be used")
        channels, kernel_in, kernel_out = x.shape[lhs[1]], w.shape[rhs[1]], w.shape[rhs[0]]
        if channels != kernel_in * groups or kernel_out % (groups * batch_groups):
            raise ShapeError(
                f"{where}: x has {channels} channels and w takes {kernel_in} per group with {kernel_out} "
                f"outputs; with {groups} group(s) the channels must be {kernel_in} * {groups} and the "
                "outputs a multiple of the groups"
            )
        if x.shape[lhs[0]] % batch_groups:
            raise ShapeError(f"{where}: a batch of {x.shape[lhs[0]]} is not divisible into {batch_groups} groups")
        for i in range(spatial):
            size = x.shape[lhs[2 + i]] + sum(self.padding[i])
            kernel = _dilated(w.shape[rhs[2 + i]], self.rhs_dilation[i])
            if size < kernel:
                raise ShapeError(
                    f"{where}: spatial axis {i}: the kernel spans {kernel} (dilation {self.rhs_dilation[i]}) "
                    f"but the padded input only {size} (padding {self.padding[i]})"
                )
        for node in (x, w):
            if jnp.issubdtype(node.dtype, jnp.complexfloating) or node.dtype == jnp.bool_:
                raise ValueTypeError(f"{where}: convolutions take real numbers, got {node.dtype}")

    def call(self, x, w):
        return lax.conv_general_dilated(
            x.value,
            w.value,
            self.strides,
            self.padding,
            rhs_dilation=self.rhs_dilation,
            dimension_numbers=self.dimension_numbers,
            feature_group_count=self.feature_group_count,
            batch_group_count=self.batch_group_count,
        )

    def vjp(self, g, out, x, w):
        dx = self._input_cotangent(g, x, w) if x.requires_grad else None
        dw = self._kernel_cotangent(g, x, w) if w.requires_grad else None
        return dx, dw

    def _input_cotangent(self, g, x, w):
        """The transposed convolution: g dilated by the strides, the kernels flipped."""
        lhs, rhs, out = self.dimension_numbers
        kernel, groups = w.value, self.feature_group_count
        if groups > 1 or self.batch_group_count > 1:  # each group's outputs become its inputs
            groups = max(groups, self.batch_group_count)
            kernel = _merge_axis(_split_axis(kernel, rhs[0], groups), rhs[0], rhs[1])
        config = [(0, 0, 0)] * g.ndim
        for i, (axis, n, m, k) in enumerate(
            zip(out[2:], np.take(x.shape, lhs[2:]), np.take(g.shape, out[2:]), np.take(w.shape, rhs[2:]), strict=True)
        ):
            kernel_size, stride = _dilated(int(k), self.rhs_dilation[i]), self.strides[i]
            low = kernel_size - self.padding[i][0] - 1
            high = int(n) + kernel_size - 1 - _dilated(int(m), stride) - low
            config[axis] = (low, high, stride - 1)
        # the dilation and padding as an explicit pad, not the convolution's lhs_dilation (module docstring)
        dilated = xp.pad(g, config) if any(c != (0, 0, 0) for c in config) else g
        dx = xp.conv_general(
            dilated,
            xp.flip(kernel, rhs[2:]),
            (1,) * len(self.strides),
            ((0, 0),) * len(self.strides),
            self.rhs_dilation,
            lax.ConvDimensionNumbers(out, _swap01(rhs), lhs),
            feature_group_count=groups,
        )
        if self.batch_group_count > 1:  # the groups were stacked along the features: back onto the batch
            dx = _merge_axis(_split_axis(dx, lhs[1], self.batch_group_count), lhs[1], lhs[0])
        return dx

    def _kernel_cotangent(self, g, x, w):
        """x correlated with g: the batch summed, strides and kernel dilation swapped, the
        feature groups as batch groups (and back)."""
        lhs, rhs, out = self.dimension_numbers
        groups, batch_groups = self.feature_group_count, self.batch_group_count
        if batch_groups > 1:
            groups, batch_groups = batch_groups, 1
        elif groups > 1:
            groups, batch_groups = 1, groups
        padding = []
        for i, (n, k, m) in enumerate(
            zip(np.take(x.shape, lhs[2:]), np.take(w.shape, rhs[2:]), np.take(g.shape, out[2:]), strict=True)
        ):
            low = self.padding[i][0]
            high = _dilated(int(m), self.strides[i]) - int(n) + _dilated(int(k), self.rhs_dilation[i]) - low - 1
            padding.append((low, high))
        return xp.conv_general(
            x.value,
            g,
            self.rhs_dilation,
            padding,
            self.strides,
            lax.ConvDimensionNumbers(_swap01(lhs), _swap01(out), _swap01(rhs)),
            feature_group_count=groups,
            batch_group_count=batch_groups,
        )


def _describe(node):
    return f"{node.dtype}{list(node.shape)}"


def _dimension_numbers(x, w, dimension_numbers):
    if dimension_numbers is None or (
        isinstance(dimension_numbers, (tuple, list)) and isinstance(dimension_numbers[0], str)
    ):
        return lax.conv_dimension_numbers(x.shape, w.shape, dimension_numbers)
    return dimension_numbers


def conv_general(
    x: NodeLike,
    w: NodeLike,
    strides: Sequence[int],
    padding: Any,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
) -> Node:
    """lax.conv_general_dilated's arguments (padding: (low, high) pairs, 'SAME' or 'VALID';
    dimension_numbers: strings such as ("NHWC", "HWIO", "NHWC"), specs, or None for
    NC..., OI...). `lhs_dilation` is applied as an explicit interior pad (see the module
    docstring); see ConvGeneral for the rest."""
    x_node, w_node = as_node(x), as_node(w)
    spatial = x_node.ndim - 2
    try:
        numbers_ = _dimension_numbers(x_node, w_node, dimension_numbers)
        strides_ = _tuple(tuple(strides), spatial, "strides")
        dilation = _tuple(tuple(rhs_dilation) if rhs_dilation is not None else 1, spatial, "rhs_dilation")
        spread = _tuple(tuple(lhs_dilation) if lhs_dilation is not None else 1, spatial, "lhs_dilation")
        lhs, rhs, _ = numbers_
        if any(s != 1 for s in spread):
            config = [(0, 0, 0)] * x_node.ndim
            for axis, s in zip(lhs[2:], spread, strict=True):
                config[axis] = (0, 0, s - 1)
            x_node = xp.pad(x_node, config)
        kernel = [_dilated(w_node.shape[a], d) for a, d in zip(rhs[2:], dilation, strict=True)]
        pads = _padding(padding, [x_node.shape[a] for a in lhs[2:]], kernel, strides_)
    except (ValueError, TypeError) as e:
        raise ShapeError(
            f"{_place('conv_general')}: cannot apply to inputs {_describe(x_node)} and {_describe(w_node)}: {e}"
        ) from e
    return ConvGeneral(strides_, pads, dilation, numbers_, feature_group_count, batch_group_count)(x_node, w_node)


def _place(name):
    scope = context.scope
    return f"{scope.path}/{name}" if scope is not None else name


def _torch_layout(spatial):
    """Dimension numbers for PyTorch's layouts: x (N, C, *spatial), w (O, I, *kernel)."""
    spec = tuple(range(spatial + 2))
    return lax.ConvDimensionNumbers(spec, spec, spec)


def _conv(name, spatial, x, w, stride, padding, dilation, groups):
    x, w = as_node(x), as_node(w)
    where = f"{_place(name)}: cannot apply to inputs {_describe(x)} and {_describe(w)}"
    layout = "NC" + "DHW"[3 - spatial :]
    if x.ndim != spatial + 2 or w.ndim != spatial + 2:
        raise ShapeError(
            f"{where}: {name} takes x shaped ({', '.join(layout)}) and w shaped "
            f"(out_channels, in_channels / groups, {', '.join('k' + a.lower() for a in layout[2:])})"
        )
    if not isinstance(groups, numbers.Integral) or groups < 1:
        raise ShapeError(f"{where}: groups must be a positive int, got {groups!r}")
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        raise ShapeError(
            f"{where}: with groups={groups}, x's {x.shape[1]} channels must be w.shape[1] * groups = "
            f"{w.shape[1] * groups} and w's {w.shape[0]} output channels a multiple of {groups}"
        )
    try:
        strides = _tuple(stride, spatial, "stride")
        dilations = _tuple(dilation, spatial, "dilation")
        if min(strides + dilations) < 1:
            raise ValueError(f"stride and dilation must be >= 1, got {stride!r} and {dilation!r}")
        kernel = [_dilated(k, d) for k, d in zip(w.shape[2:], dilations, strict=True)]
        pads = _padding(padding, x.shape[2:], kernel, strides)
    except ValueError as e:
        raise ShapeError(f"{where}: {e}") from e
    return ConvGeneral(strides, pads, dilations, _torch_layout(spatial), int(groups), name=name)(x, w)


def conv1d(x: NodeLike, w: NodeLike, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Node:
    """Cross-correlation of x (N, C, L) with kernels w (O, C / groups, k), as PyTorch's
    conv1d; padding: an int, a (low, high) pair in a list, 'valid' or 'same'."""
    return _conv("conv1d", 1, x, w, stride, padding, dilation, groups)


def conv2d(x: NodeLike, w: NodeLike, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Node:
    """Cross-correlation of x (N, C, H, W) with kernels w (O, C / groups, kh, kw), as PyTorch's
    conv2d; padding: an int, a pair, explicit ((top, bottom), (left, right)), 'valid' or
    'same' (output = ceil(input / stride))."""
    return _conv("conv2d", 2, x, w, stride, padding, dilation, groups)


def conv3d(x: NodeLike, w: NodeLike, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Node:
    """Cross-correlation of x (N, C, D, H, W) with kernels w (O, C / groups, kd, kh, kw), as PyTorch's conv3d."""
    return _conv("conv3d", 3, x, w, stride, padding, dilation, groups)


def _conv_transpose(name, spatial, x, w, stride, padding, output_padding, groups, dilation):
    """PyTorch's ConvTranspose: the input-gradient of a convolution with these settings. x
    (N, C_in, *spatial), w (C_in, C_out / groups, *kernel); output size per axis
    (n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1. Built as x
    dilated by the stride and padded (one explicit pad) correlated with the flipped kernels."""
    x, w = as_node(x), as_node(w)
    where = f"{_place(name)}: cannot apply to inputs {_describe(x)} and {_describe(w)}"
    if x.ndim != spatial + 2 or w.ndim != spatial + 2:
        raise ShapeError(
            f"{where}: {name} takes x shaped (N, C_in, {spatial} spatial axes) and w shaped "
            f"(C_in, C_out / groups, {spatial} kernel axes)"
        )
    if not isinstance(groups, numbers.Integral) or groups < 1 or x.shape[1] != w.shape[0] or w.shape[0] % groups:
        raise ShapeError(f"{where}: w.shape[0] must be x's {x.shape[1]} input channels, divisible by groups={groups!r}")
    try:
        strides = _tuple(stride, spatial, "stride")
        dilations = _tuple(dilation, spatial, "dilation")
        paddings = _tuple(padding, spatial, "padding")
        extra = _tuple(output_padding, spatial, "output_padding")
    except ValueError as e:
        raise ShapeError(f"{where}: {e}") from e
    if min(strides + dilations) < 1 or min(paddings + extra) < 0:
        raise ShapeError(f"{where}: stride and dilation must be >= 1, padding and output_padding >= 0")
    if any(more >= max(s, d) for more, s, d in zip(extra, strides, dilations, strict=True)):
        raise ShapeError(f"{where}: output_padding {extra} must be smaller than the stride or the dilation")
    config = [(0, 0, 0), (0, 0, 0)]
    for n, k, s, d, p, more in zip(x.shape[2:], w.shape[2:], strides, dilations, paddings, extra, strict=True):
        reach = d * (k - 1)
        size = (n - 1) * s - 2 * p + reach + more + 1
        if size < 1:
            raise ShapeError(f"{where}: the output would have no elements along an axis (size {size})")
        config.append((reach - p, reach - p + more, s - 1))
    dilated = xp.pad(x, config) if any(c != (0, 0, 0) for c in config) else x
    kernel = w
    groups = int(groups)
    if groups > 1:  # (C_in, C_out/g, k) -> (C_out, C_in/g, k), group by group
        kernel = _split_axis(kernel, 0, groups)  # (g, C_in/g, C_out/g, k...)
        kernel = xp.transpose(kernel, (0, 2, 1, *range(3, kernel.ndim)))
        kernel = xp.reshape(kernel, (w.shape[1] * groups, w.shape[0] // groups, *w.shape[2:]))
        layout = _torch_layout(spatial)
    else:  # w is already (I, O, k...) as the convolution reads it
        spec = tuple(range(spatial + 2))
        layout = lax.ConvDimensionNumbers(spec, (1, 0, *spec[2:]), spec)
    flipped = xp.flip(kernel, tuple(range(2, spatial + 2)))
    return ConvGeneral((1,) * spatial, ((0, 0),) * spatial, dilations, layout, groups, name=name)(dilated, flipped)


def conv_transpose1d(x, w, stride=1, padding=0, output_padding=0, groups=1, dilation=1) -> Node:
    """PyTorch's conv_transpose1d: x (N, C_in, L), w (C_in, C_out / groups, k)."""
    return _conv_transpose("conv_transpose1d", 1, x, w, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(x, w, stride=1, padding=0, output_padding=0, groups=1, dilation=1) -> Node:
    """PyTorch's conv_transpose2d (the input-gradient of a strided conv2d): x (N, C_in, H, W),
    w (C_in, C_out / groups, kh, kw); output (H - 1) * stride - 2 * padding +
    dilation * (kh - 1) + output_padding + 1 (likewise W)."""
    return _conv_transpose("conv_transpose2d", 2, x, w, stride, padding, output_padding, groups, dilation)


def conv_transpose3d(x, w, stride=1, padding=0, output_padding=0, groups=1, dilation=1) -> Node:
    """PyTorch's conv_transpose3d: x (N, C_in, D, H, W), w (C_in, C_out / groups, kd, kh, kw)."""
    return _conv_transpose("conv_transpose3d", 3, x, w, stride, padding, output_padding, groups, dilation)
