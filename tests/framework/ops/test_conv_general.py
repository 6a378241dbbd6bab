"""Convolutions on ConvGeneral: conv1d/conv2d/conv3d (stride, padding incl. 'same',
dilation, groups), conv_transpose1d/2d (PyTorch semantics), conv_general (dimension
numbers, lhs dilation), pooling: first order against jax.vjp of a reference and finite
differences, second order against JAX's autodiff of the reference, compiled, and bad input.

The reference computes a convolution as a sum over kernel offsets of strided slices times
kernel columns (einsum): its jax.vjp never transposes a convolution (XLA 0.10's CPU
compiler aborts on some of those)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import zkynet
from zkynet.framework import cg, op
from zkynet.framework.ops.convolution import _dilated, _padding, _tuple
from zkynet.gradcheck import check_gradients

from .second_order import check_second_order

examples = settings(max_examples=10, deadline=None)


def conv_reference(x, w, stride, padding, dilation, groups):
    """x (N, C, *S) correlated with w (O, C / groups, *K): explicit (low, high) padding per axis."""
    spatial = x.ndim - 2
    x = jnp.pad(x, [(0, 0), (0, 0), *padding])
    out = [(n - _dilated(k, d)) // s + 1 for n, k, s, d in zip(x.shape[2:], w.shape[2:], stride, dilation, strict=True)]
    n, c = x.shape[:2]
    o = w.shape[0]
    xg = x.reshape(n, groups, c // groups, *x.shape[2:])
    wg = w.reshape(groups, o // groups, c // groups, *w.shape[2:])
    total = 0
    for offsets in itertools.product(*[range(k) for k in w.shape[2:]]):
        window = tuple(
            slice(a * d, a * d + s * (m - 1) + 1, s) for a, d, s, m in zip(offsets, dilation, stride, out, strict=True)
        )
        total = total + jnp.einsum(
            "ngc...,goc->ngo...", xg[(slice(None),) * 3 + window], wg[(slice(None),) * 3 + offsets]
        )
    return total.reshape(n, o, *out) if spatial else total


def torch_conv(spatial, stride, padding, dilation, groups):
    """PyTorch-layout conv as conv_reference with PyTorch's argument rules."""

    def reference(x, w):
        strides, dilations = _tuple(stride, spatial, "s"), _tuple(dilation, spatial, "d")
        kernel = [_dilated(k, d) for k, d in zip(w.shape[2:], dilations, strict=True)]
        pads = _padding(padding, x.shape[2:], kernel, strides)
        return conv_reference(x, w, strides, pads, dilations, groups)

    return reference


OPS = {1: op.conv1d, 2: op.conv2d, 3: op.conv3d}


@examples
@given(
    spatial=st.sampled_from([1, 2, 3]),
    n=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    per_group=st.integers(1, 2),
    out_per_group=st.integers(1, 2),
    size=st.integers(3, 6),
    k=st.integers(1, 3),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    padding=st.sampled_from([0, 1, "same", "valid"]),
    seed=st.integers(0, 2**16),
)
@example(spatial=2, n=2, groups=1, per_group=2, out_per_group=3, size=4, k=2, stride=2, padding=1, dilation=1, seed=0)
def test_conv_nd_against_a_reference(
    spatial, n, groups, per_group, out_per_group, size, k, stride, dilation, padding, seed
):
    if spatial == 3:
        size = min(size, 4)
    if _dilated(k, dilation) > size + (2 * padding if isinstance(padding, int) else 0) and padding != "same":
        k = 1
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, groups * per_group, *[size + i for i in range(spatial)]))
    w = rng.normal(size=(groups * out_per_group, per_group, *[k] * spatial))
    fn = OPS[spatial]
    check_gradients(
        lambda x, w: fn(x, w, stride, padding, dilation, groups),
        torch_conv(spatial, stride, padding, dilation, groups),
        [x, w],
        seed,
    )


def test_the_shape_that_aborted_xlas_cpu_compiler():
    """x 4x3, kernel 2x3, stride 2, padding 1 (a strided lhs_dilation convolution aborted
    XLA 0.10's CPU simplifier): first and second order."""
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, 2, 4, 3)), rng.normal(size=(3, 2, 2, 3))
    reference = torch_conv(2, 2, 1, 1, 1)
    check_gradients(lambda x, w: op.conv2d(x, w, 2, 1), reference, [x, w])
    check_second_order(lambda x, w: op.conv2d(x, w, 2, 1), reference, [x, w])


@pytest.mark.parametrize(
    "spatial, stride, padding, dilation, groups",
    [
        (1, 2, 1, 2, 1),
        (2, (2, 1), ((1, 0), (0, 2)), (1, 2), 2),
        (2, 1, "same", 2, 3),  # depthwise
        (3, (1, 2, 1), 1, 1, 1),
    ],
)
def test_conv_second_order(spatial, stride, padding, dilation, groups):
    rng = np.random.default_rng(spatial)
    x = rng.normal(size=(2, 3 if groups == 3 else 2 * groups, *[5] * spatial))
    w = rng.normal(size=(3 * (groups if groups > 1 else 1), x.shape[1] // groups, *[2] * spatial))
    if spatial == 3:
        x, w = x[:1, :, :4, :4, :3], w[:2]
    check_second_order(
        lambda x, w: OPS[spatial](x, w, stride, padding, dilation, groups),
        torch_conv(spatial, stride, padding, dilation, groups),
        [x, w],
    )


def transpose_reference(spatial, stride, padding, output_padding, groups, dilation):
    """PyTorch's conv_transpose: the input-gradient of the convolution with these settings."""

    def reference(y, w):
        strides, dilations = _tuple(stride, spatial, "s"), _tuple(dilation, spatial, "d")
        pads, extra = _tuple(padding, spatial, "p"), _tuple(output_padding, spatial, "o")
        sizes = [
            (m - 1) * s - 2 * p + d * (k - 1) + e + 1
            for m, k, s, p, d, e in zip(y.shape[2:], w.shape[2:], strides, pads, dilations, extra, strict=True)
        ]
        x = jnp.zeros((y.shape[0], w.shape[1] * groups, *sizes), y.dtype)
        _, pull = jax.vjp(lambda x: conv_reference(x, w, strides, [(p, p) for p in pads], dilations, groups), x)
        return pull(y)[0]

    return reference


@pytest.mark.parametrize(
    "stride, padding, output_padding, groups, dilation",
    [(1, 0, 0, 1, 1), (2, 1, 1, 1, 1), (3, 0, 2, 1, 1), (2, 1, 0, 2, 2), ((2, 1), (0, 1), (1, 0), 1, (1, 2))],
)
def test_conv_transpose2d_is_the_input_gradient_of_conv2d(stride, padding, output_padding, groups, dilation):
    rng = np.random.default_rng(0)
    y, w = rng.normal(size=(2, 2 * groups, 3, 4)), rng.normal(size=(2 * groups, 3, 2, 3))
    reference = transpose_reference(2, stride, padding, output_padding, groups, dilation)

    def fn(y, w):
        return op.conv_transpose2d(y, w, stride, padding, output_padding, groups, dilation)

    check_gradients(fn, reference, [y, w])
    check_second_order(fn, reference, [y, w], hessian=False)


def test_conv_transpose_1d_and_3d():
    rng = np.random.default_rng(1)
    y, w = rng.normal(size=(1, 2, 4)), rng.normal(size=(2, 3, 3))
    check_gradients(lambda y, w: op.conv_transpose1d(y, w, 2, 1, 1), transpose_reference(1, 2, 1, 1, 1, 1), [y, w])
    y, w = rng.normal(size=(1, 2, 2, 3, 2)), rng.normal(size=(2, 1, 2, 2, 2))
    check_gradients(lambda y, w: op.conv_transpose3d(y, w, 2), transpose_reference(3, 2, 0, 0, 1, 1), [y, w])


def test_conv_transpose2d_output_size_is_pytorchs():
    x, w = jnp.ones((1, 4, 5, 7)), jnp.ones((4, 6, 3, 2))
    out = op.conv_transpose2d(x, w, stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=(2, 1))
    # (H - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1
    assert out.shape == (1, 6, 4 * 2 - 2 + 2 * 2 + 1 + 1, 6 * 3 - 0 + 1 * 1 + 2 + 1)


def test_conv_general_dimension_numbers_and_lhs_dilation():
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=(2, 5, 4, 3)), rng.normal(size=(2, 2, 3, 4))  # NHWC, HWIO

    def reference(x, w):
        nchw = jnp.transpose(x, (0, 3, 1, 2))
        oihw = jnp.transpose(w, (3, 2, 0, 1))
        return jnp.transpose(conv_reference(nchw, oihw, (2, 1), [(1, 0), (1, 1)], (1, 2), 1), (0, 2, 3, 1))

    def fn(x, w):
        return op.conv_general(
            x, w, (2, 1), ((1, 0), (1, 1)), rhs_dilation=(1, 2), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    check_gradients(fn, reference, [x, w])
    check_second_order(fn, reference, [x, w], hessian=False)

    x, w = rng.normal(size=(1, 2, 3, 3)), rng.normal(size=(2, 2, 2, 2))

    def spread(x):  # lhs_dilation (2, 1): zeros between the rows
        out = jnp.zeros((1, 2, 5, 3)).at[:, :, ::2].set(x)
        return conv_reference(out, w, (1, 1), [(1, 1), (0, 0)], (1, 1), 1)

    check_gradients(lambda x: op.conv_general(x, w, (1, 1), ((1, 1), (0, 0)), lhs_dilation=(2, 1)), spread, [x])


def test_pooling_second_order():
    x = np.random.default_rng(3).normal(size=(2, 2, 5, 4))
    check_second_order(
        lambda x: op.max_pool2d(x, 2, 1, 1) ** 2,
        lambda x: (
            jax.lax.reduce_window(
                x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 1, 1), ((0, 0), (0, 0), (1, 1), (1, 1))
            )
            ** 2
        ),
        [x],
        hessian=False,
    )
    check_second_order(
        lambda x: op.avg_pool2d(x, (2, 1)) ** 3,
        lambda x: (jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 1, 2, 1), (1, 1, 2, 1), "VALID") / 2) ** 3,
        [x],
        hessian=False,
    )


class _Net(cg.Module):
    def __init__(self):
        rng = np.random.default_rng(4)
        super().__init__(
            inputs=(cg.Variable("x"),),
            params=(
                cg.Parameter("w1", jnp.asarray(rng.normal(size=(4, 1, 3)), jnp.float32)),
                cg.Parameter("w2", jnp.asarray(rng.normal(size=(4, 2, 2)), jnp.float32)),
            ),
        )

    def call(self, x):
        h = op.tanh(op.conv1d(x, self.param("w1"), stride=2, padding="same", groups=2))
        return op.sum(op.conv1d(h, self.param("w2"), dilation=2, groups=2) ** 2)


def test_compiled_gradients_match_jax():
    net = _Net()
    x = jnp.asarray(np.random.default_rng(5).normal(size=(3, 2, 9)), jnp.float32)
    params = net.named_parameters()

    @jax.jit
    def ours(values, x):
        graph = cg.call_module(net, (x,), param_values={p: values[n] for n, p in params.items()})
        graph.back()
        return {n: graph.grad(p) for n, p in params.items()}

    def reference(values, x):
        h = jnp.tanh(torch_conv(1, 2, "same", 1, 2)(x, values["w1"]))
        return jnp.sum(torch_conv(1, 1, 0, 2, 2)(h, values["w2"]) ** 2)

    values = {n: p.value for n, p in params.items()}
    found, expected = ours(values, x), jax.jit(jax.grad(reference))(values, x)
    for name in values:
        np.testing.assert_allclose(found[name], expected[name], rtol=2e-4, atol=2e-4)


def test_hessian_through_a_strided_convolution():
    w = jnp.asarray(np.random.default_rng(6).normal(size=(2, 1, 2, 2)))
    x = jnp.asarray(np.random.default_rng(7).normal(size=(1, 1, 4, 4)))
    h = zkynet.hessian(lambda x: op.sum(op.tanh(op.conv2d(x, w, stride=2))))(x)
    ref = jax.jit(jax.hessian(lambda x: jnp.sum(jnp.tanh(torch_conv(2, 2, 0, 1, 1)(x, w)))))(x)  # one program
    np.testing.assert_allclose(h, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: op.conv2d(jnp.ones((1, 3, 5, 5)), jnp.ones((2, 2, 3, 3))),
            r"conv2d: cannot apply to inputs .*groups=1, x's 3 channels",
        ),
        (
            lambda: op.conv2d(jnp.ones((1, 4, 5, 5)), jnp.ones((3, 2, 3, 3)), groups=2),
            r"output channels a multiple of 2",
        ),
        (lambda: op.conv2d(jnp.ones((1, 1, 5, 5)), jnp.ones((1, 1, 3))), r"conv2d: .*takes x shaped \(N, C, H, W\)"),
        (lambda: op.conv1d(jnp.ones((1, 1, 2)), jnp.ones((1, 1, 3))), r"kernel spans 3 .* padded input only 2"),
        (lambda: op.conv1d(jnp.ones((1, 1, 5)), jnp.ones((1, 1, 2)), dilation=5), r"kernel spans 6 \(dilation 5\)"),
        (lambda: op.conv2d(jnp.ones((1, 1, 5, 5)), jnp.ones((1, 1, 3, 3)), padding="full"), r"padding must be"),
        (
            lambda: op.conv2d(jnp.ones((1, 1, 5, 5)), jnp.ones((1, 1, 3, 3)), stride=0),
            r"stride and dilation must be >= 1",
        ),
        (
            lambda: op.conv3d(jnp.ones((1, 2, 3, 3, 3)), jnp.ones((1, 2, 1, 1, 1)), groups=0),
            r"groups must be a positive",
        ),
        (
            lambda: op.conv_transpose2d(jnp.ones((1, 2, 3, 3)), jnp.ones((2, 1, 2, 2)), stride=2, output_padding=2),
            r"output_padding .* smaller than the stride",
        ),
        (lambda: op.conv_transpose2d(jnp.ones((1, 3, 3, 3)), jnp.ones((2, 1, 2, 2))), r"w.shape\[0\] must be x's 3"),
        (lambda: op.max_pool2d(jnp.ones((1, 1, 2, 2)), 3), r"max_pool2d: .*window does not fit"),
        (lambda: op.avg_pool2d(jnp.ones((2, 2, 2)), 2), r"avg_pool2d: .*\(N, C, H, W\)"),
    ],
)
def test_bad_input_is_refused_by_name(call, match):
    with pytest.raises(cg.ShapeError, match=match):
        call()


def test_errors_name_the_place_in_the_model():
    class Model(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),), name="model")

        def call(self, x):
            return op.conv2d(x, jnp.ones((1, 2, 3, 3)))

    with pytest.raises(
        cg.ShapeError, match=r"model/conv2d: cannot apply to inputs float32\[1, 3, 5, 5\] and float32\[1, 2, 3, 3\]"
    ):
        Model()(jnp.ones((1, 3, 5, 5)))
