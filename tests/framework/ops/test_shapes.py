"""Reshape, transpose, broadcast_to, concat and stack (zkynet/framework/ops/shapes.py)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, broadcastable_shapes

from tests.framework.ops.strategies import examples, seeds, shapes
from zkynet.framework import op
from zkynet.gradcheck import check_gradients


@st.composite
def reshapes(draw):
    shape = draw(shapes)
    size = int(np.prod(shape))
    target = draw(st.sampled_from([(size,), (-1,), tuple(reversed(shape)), (1, size, 1), shape + (1,)]))
    return shape, target


@examples
@given(case=reshapes(), seed=seeds)
def test_reshape(case, seed):
    shape, target = case
    check_gradients(
        lambda x: op.reshape(x, target),
        lambda x: jnp.reshape(x, target),
        [np.random.default_rng(seed).normal(size=shape)],
        seed,
    )


@settings(max_examples=16, deadline=None)  # cheap (one small operator): more random permutations
@given(shape=array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=3), data=st.data(), seed=seeds)
def test_transpose(shape, data, seed):
    axes = data.draw(st.none() | st.permutations(range(len(shape))).map(tuple))
    if axes and data.draw(st.booleans()):
        axes = tuple(a - len(shape) for a in axes)  # negative axes
    check_gradients(
        lambda x: op.transpose(x, axes),
        lambda x: jnp.transpose(x, axes),
        [np.random.default_rng(seed).normal(size=shape)],
        seed,
    )


@pytest.mark.parametrize(
    "shape, axes",
    [
        ((2, 3, 4), (1, 2, 0)),  # 3-cycles: a permutation that is not its own inverse, so a backward
        ((2, 3, 4), (2, 0, 1)),  # rule using the forward permutation instead of its inverse fails
        ((3, 3, 3), (1, 2, 0)),  # square: the wrong rule keeps the shape and gives wrong values
        ((2, 3, 4), (-2, -1, -3)),  # negative axes
        ((2, 3, 4, 5), (1, 3, 0, 2)),  # a 4-cycle
        ((2, 3, 4, 5), (0, 2, 3, 1)),  # a 3-cycle among the last axes
        ((2, 3), (1, 0)),  # a swap (its own inverse: the rule must get this right too)
        ((2, 3, 4), None),
    ],
    ids=str,
)
def test_transpose_permutations_that_expose_an_inverted_rule(shape, axes):
    check_gradients(
        lambda x: op.transpose(x, axes),
        lambda x: jnp.transpose(x, axes),
        [np.random.default_rng(0).normal(size=shape)],
        seed=0,
    )


@examples
@given(target=shapes, data=st.data(), seed=seeds)
def test_broadcast_to(target, data, seed):
    shape = data.draw(broadcastable_shapes(target, max_dims=len(target)))
    assume(np.broadcast_shapes(shape, target) == target)
    check_gradients(
        lambda x: op.broadcast_to(x, target),
        lambda x: jnp.broadcast_to(x, target),
        [np.random.default_rng(seed).normal(size=shape)],
        seed,
    )


@pytest.mark.parametrize("shape, target", [((3, 1), (2, 3, 4)), ((1, 4), (3, 4)), ((), (2, 2))], ids=str)
def test_broadcast_to_stretching_and_adding_axes(shape, target):
    check_gradients(
        lambda x: op.broadcast_to(x, target),
        lambda x: jnp.broadcast_to(x, target),
        [np.random.default_rng(0).normal(size=shape)],
        seed=0,
    )


@pytest.mark.parametrize("name", ["concat", "stack"])
@examples
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=3), count=st.integers(1, 3), data=st.data(), seed=seeds)
def test_join(name, shape, count, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(seed)
    if name == "concat":  # inputs may differ in size along the axis
        args = [
            rng.normal(
                size=shape[: axis % len(shape)] + (data.draw(st.integers(1, 3)),) + shape[axis % len(shape) + 1 :]
            )
            for _ in range(count)
        ]
        fn, reference = (lambda *xs: op.concat(xs, axis)), (lambda *xs: jnp.concatenate(xs, axis))
    else:
        args = [rng.normal(size=shape) for _ in range(count)]
        fn, reference = (lambda *xs: op.stack(xs, axis)), (lambda *xs: jnp.stack(xs, axis))
    check_gradients(fn, reference, args, seed)
