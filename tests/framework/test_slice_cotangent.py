"""Cotangents of slices: side-by-side slices of one array are joined by one
concatenation, never by adding zero-padded arrays, and every mix of slices (gaps,
overlaps, other axes, integers, dense uses) still gives jax.vjp's gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet.framework import cg, op
from zkynet.framework.slice_cotangent import SliceCotangent, add, dense
from zkynet.gradcheck import check_gradients

# functions of x, shaped (3, 4, 6), that read it through slices; `m` is op (zkynet) or jnp
SLICED = {
    "halves": lambda m, x: m.tanh(x[..., :3]) * x[..., 3:],
    "gap": lambda m, x: x[..., :1] * 2.0 + x[..., 4:5],
    "overlap": lambda m, x: x[:, :3] * x[:, 1:],
    "two axes": lambda m, x: x[1:, :, :2] + x[:2, :, 4:] * x[1:, 1:2, 2:4],
    "integers": lambda m, x: x[:, 0] * x[:, 1] + m.exp(x[:, 3]) - x[:, -1],
    "integers and slices": lambda m, x: x[0] * x[1:2, :, :] + x[2],
    "dense use too": lambda m, x: x * 2.0 + m.sum(m.tanh(x[..., 2:4]), axis=-1, keepdims=True) + x[..., 1:2],
    "strided": lambda m, x: x[..., ::2] * x[..., 1::2],
    "a slice of a slice": lambda m, x: x[:, 1:][:, :2] * x[:, :1],
    "an integer on a one-wide axis": lambda m, x: x[:, 1:2][:, 0] * x[:, 2],
    "every row, one by one": lambda m, x: m.stack([m.tanh(x[:, t]) * t for t in range(4)], axis=1),
}


@pytest.mark.parametrize("name", SLICED)
def test_gradients_through_slices_match_jax(name):
    x = np.random.default_rng(len(name)).normal(size=(3, 4, 6))
    fn = SLICED[name]
    check_gradients(lambda x: fn(op, x), lambda x: fn(jnp, x), [x])


class Halves(cg.Module):
    """tanh of one half of x's last axis times the other: two slices side by side."""

    def __init__(self):
        super().__init__(inputs=[cg.Variable("x")])

    def call(self, x):
        return op.sum(op.tanh(x[..., :3]) * x[..., 3:])


def _grad_of(module):
    def grad(x):
        result = module(x)
        result.back()
        return result.grad(module.input("x"))

    return grad


def test_side_by_side_slices_are_joined_without_padding():
    """The traced backward pass builds x's cotangent by one concatenation: no pad, and no
    addition of zero-padded arrays (XLA's CPU backend runs that as a scalar loop)."""
    grad = _grad_of(Halves())
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6)), jnp.float32)
    program = jax.jit(grad).lower(x).as_text()
    assert "stablehlo.pad" not in program and "stablehlo.concatenate" in program, program
    np.testing.assert_allclose(grad(x), jax.grad(lambda x: jnp.sum(jnp.tanh(x[..., :3]) * x[..., 3:]))(x), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(grad)(x), grad(x), rtol=1e-6)


def _block(start, width, fill, shape=(2, 6)):
    block = jnp.full((shape[0], width), fill, jnp.float32)
    return SliceCotangent.block(shape, 1, start, block)


def test_disjoint_blocks_stay_blocks_and_fill_gaps_with_zeros():
    total = add(_block(4, 2, 3.0), _block(0, 1, 1.0))  # out of order, with a gap at 1:4
    assert isinstance(total, SliceCotangent) and total.starts == (0, 4)
    np.testing.assert_array_equal(dense(total), [[1, 0, 0, 0, 3, 3]] * 2)
    np.testing.assert_array_equal(dense(_block(2, 3, 5.0)), [[0, 0, 5, 5, 5, 0]] * 2)


def test_overlapping_blocks_or_a_dense_array_sum_densely():
    overlap = add(_block(0, 3, 1.0), _block(2, 2, 2.0))
    assert not isinstance(overlap, SliceCotangent)
    np.testing.assert_array_equal(overlap, [[1, 1, 3, 2, 0, 0]] * 2)
    mixed = add(jnp.ones((2, 6)), _block(5, 1, 4.0))
    np.testing.assert_array_equal(mixed, [[1, 1, 1, 1, 1, 5]] * 2)
    other_axis = add(_block(0, 1, 1.0), SliceCotangent.block((2, 6), 0, 1, jnp.full((1, 6), 2.0)))
    np.testing.assert_array_equal(other_axis, [[1, 0, 0, 0, 0, 0], [3, 2, 2, 2, 2, 2]])


def test_blocks_read_by_integers_lack_their_axis_until_assembled():
    rows = [jnp.full((2,), float(t)) for t in range(3)]
    total = SliceCotangent.block((3, 2), 0, 2, rows[2], squeezed=True)
    for t in (0, 1):
        total = add(total, SliceCotangent.block((3, 2), 0, t, rows[t], squeezed=True))
    assert isinstance(total, SliceCotangent) and total.starts == (0, 1, 2)
    np.testing.assert_array_equal(dense(total), [[0, 0], [1, 1], [2, 2]])
    again = add(total, SliceCotangent.block((3, 2), 0, 1, rows[1], squeezed=True))  # row 1 twice: a dense sum
    np.testing.assert_array_equal(again, [[0, 0], [2, 2], [2, 2]])


def test_a_jitted_rule_may_return_one():
    """A pytree: a fused (jitted) backward rule can hand one back."""
    made = jax.jit(lambda g: SliceCotangent.block((2, 6), 1, 1, g))(jnp.ones((2, 2)))
    assert isinstance(made, SliceCotangent) and made.starts == (1,)
    np.testing.assert_array_equal(dense(made), [[0, 1, 1, 0, 0, 0]] * 2)
