"""sin, cos, erf (and conj, real): against jax.vjp, finite differences and JAX's second
derivatives, on random shapes, compiled."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from zkynet.framework import cg, op
from zkynet.gradcheck import check_gradients, check_operator

from .second_order import check_second_order

FUNCTIONS = {"sin": (op.sin, jnp.sin), "cos": (op.cos, jnp.cos), "erf": (op.erf, jax.scipy.special.erf)}


@pytest.mark.parametrize("name", FUNCTIONS)
@settings(max_examples=6, deadline=None)
@given(shape=array_shapes(min_dims=0, max_dims=3, max_side=3), seed=st.integers(0, 2**16))
def test_against_jax(name, shape, seed):
    fn, reference = FUNCTIONS[name]
    check_gradients(fn, reference, [2 * np.random.default_rng(seed).normal(size=shape)], seed)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_operator_classes_and_second_order(name):
    fn, reference = FUNCTIONS[name]
    check_operator(type(fn)(), reference)
    check_second_order(fn, reference, [np.random.default_rng(0).normal(size=(2, 3))])


def test_compiled():
    x = jnp.linspace(-2, 2, 7, dtype=jnp.float32)

    @jax.jit
    def grads(x):
        node = cg.InputNode(x, cg.Variable("x"))
        return cg.gradients(op.sum(op.sin(node) * op.cos(node) + op.erf(node)), [node], create_graph=False)[0]

    expected = jax.grad(lambda x: jnp.sum(jnp.sin(x) * jnp.cos(x) + jax.scipy.special.erf(x)))(x)
    np.testing.assert_allclose(grads(x), expected, rtol=1e-5, atol=1e-6)


def test_conj_and_real_follow_jaxs_convention():
    z = (np.random.default_rng(1).normal(size=3) + 1j * np.random.default_rng(2).normal(size=3)).astype(np.complex128)
    with jax.enable_x64(True):
        z = jnp.asarray(z)
        import zkynet

        for fn, reference in [
            (lambda z: op.sum(op.real(op.conj(z) * z * 2j + z)), lambda z: jnp.sum(jnp.real(jnp.conj(z) * z * 2j + z))),
            (lambda z: op.sum(op.real(op.sin(z) * op.cos(z))), lambda z: jnp.sum(jnp.real(jnp.sin(z) * jnp.cos(z)))),
        ]:
            np.testing.assert_allclose(zkynet.grad(fn)(z), jax.grad(reference)(z), rtol=1e-12)
