"""sort and topk: values and gradients against jax.vjp of jnp.sort / lax.top_k and finite
differences, indices, ties, second order, compiled, bad k and axes."""

import jax
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
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=5), data=st.data(), seed=st.integers(0, 2**16))
def test_sort(shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    descending = data.draw(st.booleans())
    x = np.random.default_rng(seed).normal(size=shape)
    check_gradients(
        lambda x: op.sort(x, axis, descending), lambda x: jnp.sort(x, axis=axis, descending=descending), [x], seed
    )


def test_sort_second_order_and_ties():
    x = np.random.default_rng(0).normal(size=(3, 4))
    check_second_order(lambda x: op.sort(x, 0) ** 3, lambda x: jnp.sort(x, 0) ** 3, [x])
    tied = np.array([2.0, 1.0, 2.0, 1.0])
    g = cg.gradients(op.sum(op.sort(tied) * jnp.arange(4.0)), [cg.as_node(tied)])  # a constant input: zeros
    assert g[0].shape == (4,)


@examples
@given(shape=array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5), data=st.data(), seed=st.integers(0, 2**16))
def test_topk(shape, data, seed):
    k = data.draw(st.integers(0, shape[-1]))
    x = np.random.default_rng(seed).normal(size=shape)
    check_gradients(lambda x: op.topk(x, k)[0], lambda x: jax.lax.top_k(x, k)[0], [x], seed)


def test_topk_indices_axis_and_second_order():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)))
    values, indices = op.topk(x, 2, axis=0)
    expected_values, expected_indices = jax.lax.top_k(x.T, 2)
    np.testing.assert_array_equal(values.value, expected_values.T)
    np.testing.assert_array_equal(indices, expected_indices.T)
    np.testing.assert_array_equal(op.take_along_axis(x, indices, 0).value, values.value)
    check_second_order(lambda x: op.topk(x, 3)[0] ** 2, lambda x: jax.lax.top_k(x, 3)[0] ** 2, [np.asarray(x.T)])
    with cg.no_grad():  # the indices without a backward pass to keep them for
        _, again = op.topk(x, 2, axis=0)
    np.testing.assert_array_equal(again, indices)


def test_topk_compiled():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 6)), jnp.float32)

    @jax.jit
    def grad(x):
        node = cg.InputNode(x, cg.Variable("x"))
        (g,) = cg.gradients(op.sum(op.topk(node, 2)[0] ** 2), [node], create_graph=False)
        return g

    np.testing.assert_allclose(grad(x), jax.grad(lambda x: jnp.sum(jax.lax.top_k(x, 2)[0] ** 2))(x), rtol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: op.topk(jnp.ones((2, 3)), 4), r"top_k: k=4 must be an int from 0 to the size of the axis \(3\)"),
        (lambda: op.topk(jnp.ones((2, 3)), -1), r"k=-1"),
        (lambda: op.topk(jnp.ones((2, 3)), 1, axis=2), r"axis 2 is out of range"),
        (lambda: op.sort(jnp.ones((2, 3)), 2), r"sort: axis 2 is out of range for the input float32\[2, 3\]"),
        (lambda: op.sort(jnp.ones(())), r"cannot sort a scalar"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(cg.ShapeError, match=match):
        call()


def test_complex_cannot_be_sorted():
    with pytest.raises(cg.ValueTypeError, match=r"complex numbers have no order"):
        op.sort(jnp.ones(3, jnp.complex64))
