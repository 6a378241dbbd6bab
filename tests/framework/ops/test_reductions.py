"""Reductions, softmax and layer norm (zkynet/framework/ops/reductions.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from tests.framework.ops.strategies import examples, seeds
from zkynet.framework import cg, op
from zkynet.gradcheck import check_gradients


@st.composite
def shape_and_axis(draw, min_dims=0, single=False):
    shape = draw(array_shapes(min_dims=max(min_dims, 1 if single else 0), max_dims=3, max_side=3))
    if single:
        return shape, draw(st.integers(-len(shape), len(shape) - 1))
    axes = draw(
        st.none() | st.lists(st.integers(0, len(shape) - 1), unique=True, max_size=len(shape)) if shape else st.none()
    )
    if axes is not None and len(axes) == 1 and draw(st.booleans()):
        axes = axes[0] - len(shape) if draw(st.booleans()) else axes[0]  # plain / negative int
    return shape, (tuple(axes) if isinstance(axes, list) else axes)


REDUCTIONS = {
    "sum": (op.sum, jnp.sum),
    "mean": (op.mean, jnp.mean),
    "max": (op.max, jnp.max),
    "logsumexp": (op.logsumexp, jax.scipy.special.logsumexp),
}


@pytest.mark.parametrize("name", REDUCTIONS)
@examples
@given(case=shape_and_axis(), keepdims=st.booleans(), seed=seeds)
@example(case=((2, 3, 4), 1), keepdims=False, seed=0)  # an interior axis
@example(case=((2, 3, 4), (0, 2)), keepdims=True, seed=1)
@example(case=((2, 3, 4), -1), keepdims=False, seed=2)
def test_reductions(name, case, keepdims, seed):
    fn, reference = REDUCTIONS[name]
    shape, axis = case
    if name == "max" and axis == ():
        axis = None  # jnp.max over no axes is the identity; nothing to test beyond sum's case
    check_gradients(
        lambda x: fn(x, axis=axis, keepdims=keepdims),
        lambda x: reference(x, axis=axis, keepdims=keepdims),
        [np.random.default_rng(seed).normal(size=shape)],
        seed,
    )


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@examples
@given(case=shape_and_axis(single=True), seed=seeds)
@example(case=((2, 3, 4), 1), seed=0)  # an interior axis
def test_softmax(name, case, seed):
    shape, axis = case
    fn, reference = getattr(op, name), getattr(jax.nn, name)
    check_gradients(
        lambda x: fn(x, axis=axis),
        lambda x: reference(x, axis=axis),
        [3 * np.random.default_rng(seed).normal(size=shape)],
        seed,
    )


def _layer_norm_reference(eps):
    def reference(x):
        centered = x - jnp.mean(x, axis=-1, keepdims=True)
        return centered / jnp.sqrt(jnp.mean(centered**2, axis=-1, keepdims=True) + eps)

    return reference


@examples
@given(shape=array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4), eps=st.sampled_from([1e-5, 0.1]), seed=seeds)
@example(shape=(2, 3, 5), eps=1e-5, seed=0)  # batch and time dims over a feature axis
@example(shape=(5,), eps=1e-5, seed=1)
@example(shape=(3, 1), eps=0.1, seed=2)  # one feature: the output is 0, its gradient too
def test_layer_norm(shape, eps, seed):
    check_gradients(
        lambda x: op.layer_norm(x, eps),
        _layer_norm_reference(eps),
        [np.random.default_rng(seed).normal(size=shape) * 2 + 1],
        seed,
    )


def test_softmax_is_stable_for_huge_logits():
    logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    np.testing.assert_allclose(op.softmax(logits).value, jax.nn.softmax(logits), atol=1e-7)
    np.testing.assert_allclose(op.log_softmax(logits).value, jax.nn.log_softmax(logits))
    assert np.isfinite(op.log_softmax(logits).value).all()


@pytest.mark.parametrize(
    "fn, reference",
    [
        (op.sum, jnp.sum),
        (op.mean, jnp.mean),
        (op.max, jnp.max),
        (op.logsumexp, jax.scipy.special.logsumexp),
        (op.softmax, jax.nn.softmax),
    ],
)
def test_numpy_integer_axes(fn, reference):
    check_gradients(
        lambda x: fn(x, axis=np.int64(1)), lambda x: reference(x, axis=1), [np.arange(6.0).reshape(2, 3)], seed=0
    )


def test_low_precision_max_gradient_dtype():
    for dtype in (jnp.bfloat16, jnp.float16):

        class Max(cg.Module):
            def __init__(self):
                super().__init__(inputs=(cg.Variable("x"),))

            def call(self, x):
                return op.max(x)

        m = Max()
        result = m(jnp.array([1.0, 3.0, 2.0], dtype))
        result.back()
        assert result.grad(m.input("x")).dtype == dtype
