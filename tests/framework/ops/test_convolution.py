"""Convolution and pooling (zkynet/framework/ops/convolution.py and pooling.py)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from jax import lax

from tests.framework.ops.strategies import examples, seeds
from zkynet.framework import op
from zkynet.framework.ops.convolution import _padding, _pair
from zkynet.gradcheck import check_gradients


def _conv_reference(stride, padding):
    """conv2d as a sum over kernel offsets of strided slices times kernel columns: its
    jax.vjp never transposes a convolution (XLA 0.10's CPU compiler aborts on some of those)."""

    def reference(x, w):
        strides = _pair(stride, "stride")
        (top, bottom), (left, right) = _padding(padding, x.shape[2:], w.shape[2:], strides)
        padded = jnp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        out = [(n - k) // s + 1 for n, k, s in zip(padded.shape[2:], w.shape[2:], strides, strict=True)]
        return sum(
            jnp.einsum(
                "nchw,oc->nohw",
                padded[
                    :,
                    :,
                    a : a + strides[0] * (out[0] - 1) + 1 : strides[0],
                    b : b + strides[1] * (out[1] - 1) + 1 : strides[1],
                ],
                w[:, :, a, b],
            )
            for a in range(w.shape[2])
            for b in range(w.shape[3])
        )

    return reference


@examples
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    o=st.integers(1, 3),
    h=st.integers(3, 7),
    w=st.integers(3, 7),
    k=st.integers(1, 3),
    stride=st.sampled_from([1, 2, (2, 1), 3]),
    padding=st.sampled_from([0, 1, (1, 2), "same", "valid", ((0, 1), (2, 0))]),
    seed=seeds,
)
@example(n=2, c=2, o=3, h=4, w=3, k=2, stride=2, padding=1, seed=0)  # aborted XLA 0.10's CPU compiler (convolution.py)
def test_conv2d(n, c, o, h, w, k, stride, padding, seed):
    rng = np.random.default_rng(seed)
    check_gradients(
        lambda x, kernel: op.conv2d(x, kernel, stride, padding),
        _conv_reference(stride, padding),
        [rng.normal(size=(n, c, h, w)), rng.normal(size=(o, c, k, k + 1 if k < 3 else k))],
        seed,
    )


def _pool_reference(init, reducer, kernel, stride, padding, scale=1.0):
    kernel, padding = _pair(kernel, "k"), _pair(padding, "p")
    stride = _pair(stride, "s") if stride is not None else kernel

    def reference(x):
        pads = ((0, 0), (0, 0)) + tuple((p, p) for p in padding)
        return lax.reduce_window(x, init, reducer, (1, 1) + kernel, (1, 1) + stride, pads) * scale

    return reference


@pytest.mark.parametrize("kind", ["max", "avg"])
@examples
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 2),
    h=st.integers(2, 7),
    w=st.integers(2, 7),
    kernel=st.sampled_from([1, 2, 3, (2, 3)]),
    stride=st.sampled_from([None, 1, 2, (1, 2)]),
    padding=st.sampled_from([0, 1]),
    seed=seeds,
)
def test_pool2d(kind, n, c, h, w, kernel, stride, padding, seed):
    kh, kw = _pair(kernel, "k")
    assume(kh <= h + 2 * padding and kw <= w + 2 * padding)  # at least one window fits
    assume(2 * padding <= min(kh, kw))  # no window lies entirely in the padding
    x = np.random.default_rng(seed).normal(size=(n, c, h, w))
    if kind == "max":
        reference = _pool_reference(-jnp.inf, lax.max, kernel, stride, padding)

        def fn(x):
            return op.max_pool2d(x, kernel, stride, padding)

    else:
        reference = _pool_reference(0.0, lax.add, kernel, stride, padding, 1 / (kh * kw))

        def fn(x):
            return op.avg_pool2d(x, kernel, stride, padding)

    check_gradients(fn, reference, [x], seed)


def test_numpy_integer_stride():
    image = jnp.ones((1, 1, 5, 5))
    assert op.conv2d(image, jnp.ones((1, 1, 3, 3)), stride=np.int64(2)).shape == (1, 1, 2, 2)


def test_integer_max_pool():
    ints = jnp.arange(16, dtype=jnp.int32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(op.max_pool2d(ints, 2).value, [[[[5, 7], [13, 15]]]])
