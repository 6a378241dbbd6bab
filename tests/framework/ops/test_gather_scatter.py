"""Reads and writes at integer indices: take_along_axis, add_along_axis, scatter_add
(rows: x.at[idx].add(updates)), pad: gradients against jax.vjp and finite differences,
second order, and the index rules (concrete out-of-range indices raise; traced ones read
NaN, and make a written result NaN)."""

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
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=4), data=st.data(), seed=st.integers(0, 2**16))
def test_take_along_axis(shape, data, seed):
    """Any axis; the indices' other axes either x's or 1 (broadcast); negative and repeated indices."""
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    index_shape = [
        data.draw(st.integers(1, 4)) if a == axis % len(shape) else data.draw(st.sampled_from([1, n]))
        for a, n in enumerate(shape)
    ]
    rng = np.random.default_rng(seed)
    indices = rng.integers(-shape[axis], shape[axis], size=index_shape)
    check_gradients(
        lambda x: op.take_along_axis(x, indices, axis),
        lambda x: jnp.take_along_axis(x, indices, axis=axis),
        [rng.normal(size=shape)],
        seed,
    )


def test_take_along_axis_with_x_broadcasting():
    indices = np.array([[0, 3], [2, 2], [1, 0]])
    check_gradients(
        lambda x: op.take_along_axis(x, indices, 1),
        lambda x: jnp.take_along_axis(x, indices, axis=1),
        [np.random.default_rng(9).normal(size=(1, 4))],
    )


def test_take_along_axis_second_order_and_argmax_use():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5))
    best = jnp.argmax(x, axis=1, keepdims=True)
    check_second_order(
        lambda x: op.take_along_axis(x, best, 1) ** 3, lambda x: jnp.take_along_axis(x, best, 1) ** 3, [x]
    )


def test_add_along_axis_transposes_take_along_axis():
    rng = np.random.default_rng(1)
    x, updates = rng.normal(size=(3, 4)), rng.normal(size=(3, 6))
    indices = rng.integers(0, 4, size=(3, 6))

    def reference(x, u):
        rows = np.arange(3)[:, None].repeat(6, 1)
        return x.at[rows, indices].add(u)

    check_gradients(lambda x, u: op.add_along_axis(x, indices, u, 1), reference, [x, updates])
    check_second_order(
        lambda x, u: op.add_along_axis(x, indices, u, 1) ** 2, lambda x, u: reference(x, u) ** 2, [x, updates]
    )


def test_scatter_add_meets_the_issue():
    """Rows of a table: x.at[idx].add(updates), repeated rows add up; axis and flattened forms."""
    rng = np.random.default_rng(2)
    x, updates = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    rows = np.array([0, 3, 0, 4])
    check_gradients(lambda x, u: op.scatter_add(x, rows, u), lambda x, u: x.at[rows].add(u), [x, updates])
    check_second_order(lambda x, u: op.scatter_add(x, rows, u) ** 2, lambda x, u: x.at[rows].add(u) ** 2, [x, updates])
    columns = np.array([2, 0])
    check_gradients(
        lambda x, u: op.scatter_add(x, columns, u, axis=1),
        lambda x, u: x.at[:, columns].add(u),
        [x, rng.normal(size=(5, 2))],
    )


def test_pad_meets_the_issue():
    x = np.random.default_rng(3).normal(size=(2, 3))
    check_gradients(lambda x: op.pad(x, ((1, 2), (0, 3))), lambda x: jnp.pad(x, ((1, 2), (0, 3))), [x])
    check_gradients(lambda x: op.pad(x, 2), lambda x: jnp.pad(x, 2), [x])
    check_second_order(lambda x: op.pad(x, (1, 1)) ** 3, lambda x: jnp.pad(x, (1, 1)) ** 3, [x])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: op.take_along_axis(jnp.ones((2, 3)), jnp.array([[0, 3]]), 1),
            cg.IndexOutOfRangeError,
            r"index 3 .*axis 1 of size 3",
        ),
        (lambda: op.take_along_axis(jnp.ones((2, 3)), jnp.array([[-4]]), 1), cg.IndexOutOfRangeError, r"index -4"),
        (lambda: op.take_along_axis(jnp.ones((2, 3)), jnp.array([0, 1]), 1), cg.ShapeError, r"as many axes as x"),
        (lambda: op.take_along_axis(jnp.ones((2, 3)), jnp.array([[0.5]]), 1), cg.ValueTypeError, r"must be integers"),
        (lambda: op.take_along_axis(jnp.ones((2, 3)), jnp.array([[0]]), 2), cg.ShapeError, r"axis 2 is out of range"),
        (lambda: op.take_along_axis(jnp.ones((2, 3)), jnp.zeros((3, 1), int), 1), cg.ShapeError, r"differ on axis 0"),
        (
            lambda: op.scatter_add(jnp.ones((4, 2)), jnp.array([1, 4]), jnp.ones((2, 2))),
            cg.IndexOutOfRangeError,
            r"index 4",
        ),
        (lambda: op.scatter_add(jnp.ones((4, 2)), jnp.array([1, 2]), jnp.ones((3, 2))), cg.ShapeError, r"updates"),
        (
            lambda: op.add_along_axis(jnp.ones((2, 3)), jnp.array([[0, 5]]), jnp.ones((2, 2)), 1),
            cg.IndexOutOfRangeError,
            r"add_along_axis: index 5",
        ),
        (lambda: op.pad(jnp.ones((2, 3)), ((1, -1), (0, 0))), cg.ShapeError, r"pad: widths must not be negative"),
        (lambda: op.pad(jnp.ones((2, 3)), ((1, 1),) * 3), cg.ShapeError, r"one pair per axis"),
    ],
)
def test_bad_indices_raise_when_concrete(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_traced_out_of_range_indices_follow_the_nan_rule():
    x = jnp.arange(6.0).reshape(2, 3)

    @jax.jit
    def read(indices):
        return op.take_along_axis(x, indices, 1).value

    found = read(jnp.array([[0, 7], [2, 1]]))
    assert np.isnan(found[0, 1]) and not np.isnan(found[0, 0]) and found[1, 0] == 5.0

    @jax.jit
    def write(indices):
        return op.scatter_add(x, indices, jnp.ones((2, 3))).value, op.add_along_axis(
            x, indices[:, None], jnp.ones((2, 1)), 1
        ).value

    rows, along = write(jnp.array([0, 9]))
    assert np.isnan(rows).all() and np.isnan(along).all()  # an update went nowhere: the result says so
    rows, along = write(jnp.array([1, 1]))
    np.testing.assert_array_equal(rows, x.at[jnp.array([1, 1])].add(1.0))
