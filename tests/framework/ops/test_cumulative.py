"""Running sums and products, and min: cumsum (any axis, flattened, reversed), prod (any
axes, with zeros: none, one, two in a slice), min (ties split) against jax.vjp, finite
differences and JAX's second derivatives."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from zkynet.framework import cg, op
from zkynet.gradcheck import check_gradients

from .second_order import check_second_order

examples = settings(max_examples=10, deadline=None)


@examples
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=4), data=st.data(), seed=st.integers(0, 2**16))
def test_cumsum(shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    reverse = data.draw(st.booleans())
    x = np.random.default_rng(seed).normal(size=shape)

    def reference(x):
        return jnp.flip(jnp.cumsum(jnp.flip(x, axis), axis), axis) if reverse else jnp.cumsum(x, axis)

    check_gradients(lambda x: op.cumsum(x, axis, reverse=reverse), reference, [x], seed)


def test_cumsum_flattened_and_second_order():
    x = np.random.default_rng(0).normal(size=(2, 3))
    check_gradients(lambda x: op.cumsum(x), jnp.cumsum, [x])
    check_second_order(lambda x: op.cumsum(x, 1) ** 3, lambda x: jnp.cumsum(x, 1) ** 3, [x])


@examples
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=4), data=st.data(), seed=st.integers(0, 2**16))
def test_prod(shape, data, seed):
    axes = data.draw(st.sampled_from([None, 0, -1, tuple(range(len(shape)))]))
    keepdims = data.draw(st.booleans())
    x = np.random.default_rng(seed).uniform(0.5, 1.5, size=shape) * np.sign(
        np.random.default_rng(seed + 1).normal(size=shape)
    )
    check_gradients(lambda x: op.prod(x, axes, keepdims), lambda x: jnp.prod(x, axes, keepdims=keepdims), [x], seed)


@pytest.mark.parametrize("zeros", [0, 1, 2, 3])
def test_prod_with_zeros_is_exact_to_second_order(zeros):
    """The product of the others, not out / x: one zero leaves its own slope (the product of
    the rest), two zeros leave second derivatives between them."""
    x = np.random.default_rng(zeros).uniform(0.5, 2.0, size=(2, 5))
    x[0, :zeros] = 0.0
    x[1, 1 : 1 + zeros] = 0.0
    check_gradients(lambda x: op.prod(x, 1), lambda x: jnp.prod(x, 1), [x], fd_atol=1e-6)
    check_second_order(lambda x: op.prod(x, 1), lambda x: jnp.prod(x, 1), [x])


def test_prod_of_several_axes_second_order():
    x = np.random.default_rng(7).uniform(-1.5, 1.5, size=(2, 3, 2))
    check_second_order(lambda x: op.prod(x, (0, 2)), lambda x: jnp.prod(x, (0, 2)), [x])


@examples
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=4), data=st.data(), seed=st.integers(0, 2**16))
def test_min(shape, data, seed):
    axis = data.draw(st.sampled_from([None, 0, -1]))
    keepdims = data.draw(st.booleans())
    x = np.random.default_rng(seed).normal(size=shape)
    check_gradients(lambda x: op.min(x, axis, keepdims), lambda x: jnp.min(x, axis, keepdims=keepdims), [x], seed)


def test_min_ties_split_and_second_order():
    x = np.array([[1.0, -2.0, -2.0], [0.5, 3.0, 0.25]])
    check_gradients(lambda x: op.min(x, 1), lambda x: jnp.min(x, 1), [x], max_jacobian=0)  # ties: no finite differences
    check_second_order(lambda x: op.min(x, 1) ** 2, lambda x: jnp.min(x, 1) ** 2, [x])


def test_bad_axes():
    with pytest.raises(cg.ShapeError, match=r"cumsum: axis 2 is out of range for the input float32\[2, 3\]"):
        op.cumsum(jnp.ones((2, 3)), 2)
    with pytest.raises(cg.ValueTypeError, match=r"cumsum of booleans"):
        op.cumsum(jnp.ones(3, bool), 0)
