"""Indexing (zkynet/framework/ops/indexing.py): getitem and take against JAX; and a
hostile user's attempts, each refused with an error naming the operator, the axis, its
size and the bad index, or given the right value and gradient: integer indices out of
range (under jit too), boolean masks, traced indices (NaN, never a clamped element)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, basic_indices

from tests.framework.one_input import Fn, value_and_grad
from tests.framework.ops.strategies import examples, seeds
from zkynet.framework import cg, op
from zkynet.framework.errors import IndexOutOfRangeError, ValueTypeError
from zkynet.gradcheck import check_gradients


@examples
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=3), data=st.data(), seed=seeds)
def test_getitem_basic(shape, data, seed):
    key = data.draw(basic_indices(shape, allow_newaxis=True))
    check_gradients(lambda x: x[key], lambda x: x[key], [np.random.default_rng(seed).normal(size=shape)], seed)


SLICE_KEYS = [  # keys of slices only, whose backward is a zero padding: each way a padding can be wrong
    (slice(1, 3),),
    (slice(None), slice(0, 2)),
    (Ellipsis, slice(2, None)),
    (slice(0, 1), Ellipsis, slice(1, 4, 2)),
    (slice(-3, -1), slice(None, None, 3)),
    (slice(None, 5), slice(1, 2), slice(0, 2)),
    (Ellipsis,),
    (slice(2, 1),),
    (slice(None, None, -1),),
]  # the last two: empty and reversed, the scatter's way


@pytest.mark.parametrize("key", SLICE_KEYS, ids=str)
def test_getitem_slices(key):
    """Slices of a (4, 5, 3) array, the key shorter than the rank and with Ellipsis in
    every position, steps, negative bounds: gradients against jax.vjp."""
    x = np.random.default_rng(len(key)).normal(size=(4, 5, 3))
    check_gradients(lambda x: x[key], lambda x: x[key], [x])


@examples
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=3), seed=seeds)
def test_getitem_integer_array_with_repeats(shape, seed):
    rng = np.random.default_rng(seed)
    index = rng.integers(0, shape[0], size=(5,))  # repeats must accumulate
    check_gradients(lambda x: x[index], lambda x: x[index], [rng.normal(size=shape)], seed)


@examples
@given(
    shape=array_shapes(min_dims=1, max_dims=3, max_side=3),
    index_shape=array_shapes(max_dims=2),
    data=st.data(),
    seed=seeds,
)
def test_take(shape, index_shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, shape[axis], size=index_shape)
    check_gradients(
        lambda x: op.take(x, indices, axis), lambda x: jnp.take(x, indices, axis=axis), [rng.normal(size=shape)], seed
    )


def test_take_without_axis_reads_the_flattened_array():
    indices = jnp.array([[0, 4], [5, 5]])
    check_gradients(
        lambda x: op.take(x, indices, axis=None), lambda x: jnp.take(x, indices), [np.arange(6.0).reshape(2, 3)], seed=0
    )


# ----------------------------------------------------------------------------- hostile: x[i]

X3 = jnp.array([10.0, 20.0, 30.0])
M23 = jnp.arange(6.0).reshape(2, 3)

OUT_OF_RANGE_KEYS = [  # (array, key, the axis and size the message must name, the bad index)
    (X3, 7, "axis 0 of size 3", "7"),
    (X3, 3, "axis 0 of size 3", "3"),
    (X3, -4, "axis 0 of size 3", "-4"),
    (M23, (1, 3), "axis 1 of size 3", "3"),
    (M23, (2, 0), "axis 0 of size 2", "2"),
    (M23, (Ellipsis, -4), "axis 1 of size 3", "-4"),
    (M23, (None, 0, 5), "axis 1 of size 3", "5"),
    (M23, (slice(None), np.array([0, 3])), "axis 1 of size 3", "3"),
    (X3, [0, 1, 9], "axis 0 of size 3", "9"),
    (X3, jnp.array([2, -5]), "axis 0 of size 3", "-5"),
    (X3, 2**40, "axis 0 of size 3", "1099511627776"),  # beyond int32, where positions are kept
    (M23, (0, -(2**33)), "axis 1 of size 3", "-8589934592"),
]


@pytest.mark.parametrize("x, key, axis, bad", OUT_OF_RANGE_KEYS, ids=[str(k) for _, k, _, _ in OUT_OF_RANGE_KEYS])
def test_integer_index_out_of_range_is_refused(x, key, axis, bad):
    with pytest.raises(IndexOutOfRangeError) as error:
        value_and_grad(lambda v: op.sum(v[key]), x)
    message = str(error.value)
    assert message.startswith("Fn/getitem:") and axis in message and f" {bad} " in message
    assert "valid indices are" in message and isinstance(error.value, IndexError)


def test_too_many_indices_are_refused():
    with pytest.raises(
        IndexOutOfRangeError,
        match=r"getitem: the key \(0, 1\) indexes 2 axes of an input "
        r"with 1 \(float32\[3\]\)",
    ):
        op.getitem(X3, (0, 1))


@pytest.mark.parametrize(
    "key, value, grad",
    [
        (-1, 30.0, [0, 0, 1]),
        (-3, 10.0, [1, 0, 0]),
        (2, 30.0, [0, 0, 1]),
        (slice(1, 10), 50.0, [0, 1, 1]),  # slices keep Python's semantics: they stop at the end
        (slice(-10, 1), 10.0, [1, 0, 0]),
        ([-1, -1], 60.0, [0, 0, 2]),  # repeats accumulate
    ],
)
def test_in_range_indices_and_slices_give_the_right_value_and_gradient(key, value, grad):
    result, gradient = value_and_grad(lambda v: op.sum(v[key]), X3)
    assert float(result) == value
    np.testing.assert_array_equal(gradient, grad)


@pytest.mark.parametrize("mask", [jnp.array([True, False, True]), np.array([False, True, True])], ids=["jnp", "np"])
def test_boolean_masks_are_not_mistaken_for_indices(mask):
    result, gradient = value_and_grad(lambda v: op.sum(v[mask]), X3)
    assert float(result) == float(X3[mask].sum())
    np.testing.assert_array_equal(gradient, np.asarray(mask, float))


def test_python_int_indices_are_checked_under_jit_too():
    with pytest.raises(IndexOutOfRangeError, match="index 7 is out of range"):
        jax.jit(lambda x: op.getitem(x, 7).value)(X3)


def test_traced_index_arrays_read_nan_and_get_no_gradient():
    """Traced indices cannot be checked: out of range they read NaN (never a clamped
    element) and send no gradient anywhere."""

    def f(x, i):
        m = Fn(lambda v: op.sum(v[i]))
        result = m(x)
        result.back()
        return result.value, result.grad(m.input("x"))

    value, grad = jax.jit(f)(X3, jnp.array([0, 7]))
    assert np.isnan(value)
    np.testing.assert_array_equal(grad, [1, 0, 0])
    value, grad = jax.jit(f)(X3, jnp.array([0, -1]))  # in range, negative: the last element
    assert float(value) == 40.0
    np.testing.assert_array_equal(grad, [1, 0, 1])


# ----------------------------------------------------------------------------- hostile: op.take


@pytest.mark.parametrize(
    "indices, axis, message",
    [
        (jnp.array([0, 3]), 0, "index 3 .*out of range for axis 0 of size 2"),
        (np.array([[1], [-3]]), 0, r"index -3 \(at \[1, 0\] of the indices\) is out of range for axis 0 of size 2"),
        (jnp.array([6]), None, "index 6 .*out of range for axis 0 of the flattened input of size 6"),
        (jnp.array([0, 5]), -1, "index 5 .*out of range for axis 1 of size 3"),
    ],
)
def test_take_out_of_range_is_refused(indices, axis, message):
    with pytest.raises(IndexOutOfRangeError, match=message):
        value_and_grad(lambda v: op.sum(op.take(v, indices, axis)), M23)


def test_take_refuses_float_indices_and_bad_axes():
    with pytest.raises(ValueTypeError, match=r"take: indices must be integers, got float32\[2\]"):
        op.take(M23, jnp.array([0.0, 1.0]))
    with pytest.raises(cg.ShapeError, match=r"take: axis 2 is out of range for the input float32\[2, 3\]"):
        op.take(M23, jnp.array([0]), axis=2)


def test_take_negative_indices_count_from_the_end():
    value, grad = value_and_grad(lambda v: op.sum(op.take(v, jnp.array([-1, -1]), axis=0)), M23)
    assert float(value) == 2 * (3 + 4 + 5)
    np.testing.assert_array_equal(grad, [[0, 0, 0], [2, 2, 2]])
