"""Elementwise operators (zkynet/framework/ops/elementwise.py): unary, binary with
broadcasting each way, where, GELU's edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis.extra.numpy import mutually_broadcastable_shapes

from tests.framework.ops.strategies import examples, seeds, shapes
from zkynet.framework import cg, op
from zkynet.gradcheck import broadcasting_shapes, check_gradients, check_operator

pairs = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=3)


def normal(rng, shape):
    return rng.normal(size=shape)


def _Broadcast(input_shapes, result_shape):  # what mutually_broadcastable_shapes draws, for @example
    from hypothesis.extra.numpy import BroadcastableShapes

    return BroadcastableShapes(input_shapes=input_shapes, result_shape=result_shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, size=shape)


UNARY = {
    "neg": (op.neg, jnp.negative, normal),
    "square": (op.square, jnp.square, normal),
    "sqrt": (op.sqrt, jnp.sqrt, positive),
    "exp": (op.exp, jnp.exp, normal),
    "log": (op.log, jnp.log, positive),
    "abs": (op.abs, jnp.abs, normal),
    "tanh": (op.tanh, jnp.tanh, normal),
    "sigmoid": (op.sigmoid, jax.nn.sigmoid, normal),
    "softplus": (op.softplus, jax.nn.softplus, lambda rng, shape: 5 * rng.normal(size=shape)),
    "relu": (op.relu, jax.nn.relu, normal),
    "leaky_relu": (lambda x: op.leaky_relu(x, 0.2), lambda x: jax.nn.leaky_relu(x, 0.2), normal),
    "gelu": (op.gelu, lambda x: jax.nn.gelu(x, approximate=False), normal),
    "gelu_tanh": (lambda x: op.gelu(x, approximate=True), lambda x: jax.nn.gelu(x, approximate=True), normal),
}


@pytest.mark.parametrize("name", UNARY)
@examples
@given(shape=shapes, seed=seeds)
def test_unary(name, shape, seed):
    fn, reference, sample = UNARY[name]
    check_gradients(fn, reference, [sample(np.random.default_rng(seed), shape)], seed)


BINARY = {
    "add": (op.add, jnp.add, normal, normal),
    "sub": (op.sub, jnp.subtract, normal, normal),
    "mult": (op.mult, jnp.multiply, normal, normal),
    "div": (op.div, jnp.divide, normal, positive),
    "pow": (op.pow, jnp.power, positive, normal),
    "maximum": (op.maximum, jnp.maximum, normal, normal),
    "minimum": (op.minimum, jnp.minimum, normal, normal),
}


@pytest.mark.parametrize("name", BINARY)
@examples
@given(shapes=pairs, seed=seeds)
def test_binary_broadcasting(name, shapes, seed):
    fn, reference, sample_a, sample_b = BINARY[name]
    rng = np.random.default_rng(seed)
    a_shape, b_shape = shapes.input_shapes
    check_gradients(fn, reference, [sample_a(rng, a_shape), sample_b(rng, b_shape)], seed)


BROADCASTS = [  # each way a binary operator's backward must undo broadcasting
    ((2, 1, 3), (4, 1)),  # size-1 axes stretched on both sides, a missing leading axis
    ((4, 1), (2, 1, 3)),  # the same, the other way round
    ((), (2, 3)),  # a scalar against a matrix
    ((2, 3), ()),
    ((1, 3), (2, 1)),  # an outer product
    ((3,), (2, 3)),
]


@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
@pytest.mark.parametrize("name", BINARY)
def test_binary_broadcasting_each_way(name, shapes):
    fn, reference, sample_a, sample_b = BINARY[name]
    rng = np.random.default_rng(0)
    check_gradients(fn, reference, [sample_a(rng, shapes[0]), sample_b(rng, shapes[1])], seed=1)


def test_binary_operator_as_a_user_checks_it():
    """The public checker's own random broadcasting trials, on the operator classes."""
    assert len(broadcasting_shapes(2)) == 3
    check_operator(op.Mult(), jnp.multiply)
    check_operator(op.Div(), jnp.divide, sample=[lambda r, s: r.normal(size=s), lambda r, s: r.uniform(1, 2, s)])


@examples
@given(shapes=mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seed=seeds)
@example(shapes=_Broadcast(((2, 1, 1), (1, 3, 1), (4,)), (2, 3, 4)), seed=0)  # each input stretched
@example(shapes=_Broadcast(((3, 1), (), (1, 2)), (3, 2)), seed=1)
def test_where(shapes, seed):
    rng = np.random.default_rng(seed)
    c_shape, a_shape, b_shape = shapes.input_shapes
    condition = rng.uniform(size=c_shape) > 0.5
    check_gradients(
        lambda a, b: op.where(condition, a, b),
        lambda a, b: jnp.where(condition, a, b),
        [rng.normal(size=a_shape), rng.normal(size=b_shape)],
        seed,
    )


def test_gelu_backward_from_its_output_holds_at_zero_tiny_and_huge_inputs():
    """The exact GELU's backward reads Phi(x) as out / x: right at x = 0, for tiny and
    for large |x| too (float32, against JAX's derivative of jax.nn.gelu)."""
    x = jnp.array([0.0, -0.0, 1e-30, -1e-30, 3e-3, -3.0, -12.0, -30.0, 12.0, 1e4], jnp.float32)
    gelu, leaf = op.Gelu(), cg.InputNode(x, cg.Variable("x"))
    (got,) = gelu.vjp(jnp.ones_like(x), gelu.call(leaf), leaf)
    expected = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-30)


def test_gelu_accepts_pytorch_spellings():
    x = jnp.array([1.0])
    np.testing.assert_allclose(op.gelu(x, approximate="none").value, jax.nn.gelu(x, approximate=False))
    np.testing.assert_allclose(op.gelu(x, approximate="tanh").value, jax.nn.gelu(x, approximate=True))
    with pytest.raises(ValueError, match="approximate must be"):
        op.gelu(x, approximate="fast")
