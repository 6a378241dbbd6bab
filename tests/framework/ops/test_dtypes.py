"""Honest dtypes: integer values differentiate to float gradients (x**3 at the int 3 gives
27.0, not an int32 27); complex values follow JAX's convention (df/dx - i df/dy) through
every operator that says its rule does, equal to jax.grad, and are refused by name by
the others."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zkynet
from zkynet.framework import cg, op


class _Cube(cg.Module):
    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"),))

    def call(self, x):
        return x * x * x


def test_an_integer_input_gets_a_float_gradient():
    graph = _Cube()(3)
    assert graph.value.dtype == jnp.int32 and int(graph.value) == 27
    graph.back()
    g = graph.grad(graph.module.inputs[0])
    assert jnp.issubdtype(g.dtype, jnp.floating) and float(g) == 27.0
    graph = _Cube()(jnp.arange(3))
    graph.back(jnp.ones(3, jnp.int32))  # an integer cotangent is made a float one
    assert graph.grad(graph.module.inputs[0]).dtype == jnp.float32


def test_casts_send_float_gradients_to_integers():
    class Half(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("n"),))

        def call(self, n):
            return op.sum(op.astype(n, jnp.float32) * 0.5)

    graph = Half()(jnp.arange(4))
    graph.back()
    np.testing.assert_array_equal(graph.grad(graph.module.inputs[0]), [0.5] * 4)


def test_transforms_refuse_integer_arguments_as_jax_does():
    with pytest.raises(cg.GradientError, match="argument 0 is int32"):
        zkynet.grad(lambda x: x * x)(3)


COMPLEX = {  # a real-valued function of complex z (and the jnp reference), through each operator
    "add sub mult div": (
        lambda z: op.abs((z + 1.0) * (z - 2j) / (z + 3.0)),
        lambda z: jnp.abs((z + 1.0) * (z - 2j) / (z + 3.0)),
    ),
    "neg square sqrt": (
        lambda z: op.abs(op.sqrt(op.square(-z) + 4.0)),
        lambda z: jnp.abs(jnp.sqrt(jnp.square(-z) + 4.0)),
    ),
    "pow": (lambda z: op.abs(z**3 + (z + 5.0) ** z), lambda z: jnp.abs(z**3 + (z + 5.0) ** z)),
    "exp log": (lambda z: op.abs(op.log(op.exp(z) + 2.0)), lambda z: jnp.abs(jnp.log(jnp.exp(z) + 2.0))),
    "tanh sigmoid": (lambda z: op.abs(op.tanh(z) + op.sigmoid(z)), lambda z: jnp.abs(jnp.tanh(z) + jax.nn.sigmoid(z))),
    "sin cos": (lambda z: op.abs(op.sin(z) * op.cos(z)), lambda z: jnp.abs(jnp.sin(z) * jnp.cos(z))),
    "conj real": (lambda z: op.real(op.conj(z) * z * (1 + 2j)), lambda z: jnp.real(jnp.conj(z) * z * (1 + 2j))),
    "sum mean prod": (
        lambda z: op.abs(op.sum(z * z) + op.mean(z) * op.prod(z)),
        lambda z: jnp.abs(jnp.sum(z * z) + jnp.mean(z) * jnp.prod(z)),
    ),
    "cumsum": (lambda z: op.abs(op.cumsum(z, 0)), lambda z: jnp.abs(jnp.cumsum(z, 0))),
    "matmul einsum": (
        lambda z: op.abs(op.matmul(op.reshape(z, (2, 2)), op.reshape(z, (2, 2))) + op.einsum("i,i->", z, z)),
        lambda z: jnp.abs(z.reshape(2, 2) @ z.reshape(2, 2) + jnp.einsum("i,i->", z, z)),
    ),
    "shapes": (
        lambda z: op.abs(op.concat([op.flip(z, 0), op.pad(z, (1, 0))]) * op.stack([z, z])[1][0]),
        lambda z: jnp.abs(jnp.concatenate([jnp.flip(z, 0), jnp.pad(z, (1, 0))]) * jnp.stack([z, z])[1][0]),
    ),
    "indexing": (
        lambda z: op.abs(z[1:] * op.take(z, jnp.array([0, 0, 2])) + op.scatter_add(z[:3], jnp.array([1]), z[3:])),
        lambda z: jnp.abs(z[1:] * jnp.take(z, jnp.array([0, 0, 2])) + z[:3].at[jnp.array([1])].add(z[3:])),
    ),
    "where astype": (
        lambda z: op.abs(op.where(jnp.array([True, False, True, True]), z, 2.0 * z)) + op.astype(z, jnp.complex64) * 0,
        lambda z: jnp.abs(jnp.where(jnp.array([True, False, True, True]), z, 2.0 * z)) + z.astype(jnp.complex64) * 0,
    ),
}


@pytest.mark.parametrize("name", COMPLEX)
def test_complex_gradients_equal_jax_grad(name):
    fn, reference = COMPLEX[name]
    rng = np.random.default_rng(len(name))
    z = jnp.asarray(rng.normal(size=4) + 1j * rng.normal(size=4), jnp.complex64)
    ours = zkynet.grad(lambda z: op.sum(op.real(fn(z))))(z)
    theirs = jax.grad(lambda z: jnp.sum(jnp.real(reference(z))))(z)
    np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=1e-5)


def test_the_issues_example():
    """Sum |z z| at 3+4j: JAX 6-8j (zkynet gave -9.36+3.52j: abs and mult disagreed)."""
    z = jnp.asarray(3 + 4j, jnp.complex64)
    np.testing.assert_allclose(zkynet.grad(lambda z: op.sum(op.abs(z * z)))(z), 6 - 8j, rtol=1e-6)


def test_a_real_parameter_of_a_complex_function_gets_a_real_gradient():
    z = jnp.asarray([1 + 2j, -0.5 + 1j], jnp.complex64)
    w = jnp.asarray([0.3, -1.2])
    ours = zkynet.grad(lambda w: op.sum(op.abs(w * z + 1.0)))(w)
    assert ours.dtype == jnp.float32
    np.testing.assert_allclose(ours, jax.grad(lambda w: jnp.sum(jnp.abs(w * z + 1.0)))(w), rtol=1e-5)


@pytest.mark.parametrize(
    "fn, name",
    [
        (op.relu, "relu"),
        (lambda z: op.max(z), "max"),
        (op.softmax, "softmax"),
        (lambda z: op.layer_norm(op.reshape(z, (1, 4))), "layer_norm"),
        (op.erf, "erf"),
    ],
)
def test_operators_without_a_complex_rule_refuse_by_name(fn, name):
    z = jnp.asarray([1 + 2j, -0.5 + 1j, 2.0, 1j], jnp.complex64)
    with pytest.raises((cg.GradientError, cg.ShapeError, cg.ValueTypeError, TypeError), match=name):
        zkynet.grad(lambda z: op.sum(op.abs(fn(z))))(z)


def test_refusal_names_the_operator_and_its_place():
    class M(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("z"),), name="net")

        def call(self, z):
            return op.sum(op.abs(op.relu(z)))

    graph = M()(jnp.asarray([1 + 1j], jnp.complex64))
    with pytest.raises(
        cg.GradientError, match=r"net/relu: Relu.vjp has no rule for complex values \(input 'x' is complex64\)"
    ):
        graph.back()
