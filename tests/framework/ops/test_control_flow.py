"""Control flow under jit: op.cond, op.fori_loop (differentiable to any order) and
op.while_loop (forward only), against lax.cond / lax.fori_loop / lax.while_loop and JAX's
derivatives of them, eager and compiled; closed branches; bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zkynet
from zkynet import optim
from zkynet.framework import cg, op
from zkynet.framework.compile import TrainStep
from zkynet.gradcheck import check_gradients

from .second_order import check_second_order


def _branches():
    return (
        (lambda a, b: op.sin(a * b) + a, lambda a, b: op.exp(a) * b),
        (lambda a, b: jnp.sin(a * b) + a, lambda a, b: jnp.exp(a) * b),
    )


@pytest.mark.parametrize("pred", [True, False])
def test_cond_first_and_second_order(pred):
    (t, f), (rt, rf) = _branches()
    rng = np.random.default_rng(int(pred))
    args = [rng.normal(size=(2, 3)), rng.normal(size=(3,))]
    p = jnp.asarray(pred)

    def fn(a, b):
        return op.cond(p, t, f, a, b)

    def reference(a, b):
        return jax.lax.cond(p, rt, rf, a, b)

    check_gradients(fn, reference, args)
    check_second_order(fn, reference, args)


def test_cond_third_order():
    (t, f), (rt, rf) = _branches()
    x = jnp.asarray(0.3)

    def ours(x):
        return op.cond(x > 0, t, f, x, x)

    def theirs(x):
        return jax.lax.cond(x > 0, rt, rf, x, x)

    third = zkynet.grad(zkynet.grad(zkynet.grad(ours)))(x)
    np.testing.assert_allclose(third, jax.grad(jax.grad(jax.grad(theirs)))(x), rtol=1e-5)


def test_fori_loop_first_and_second_order():
    rng = np.random.default_rng(2)
    args = [rng.normal(size=(3,)), rng.normal(size=(3,))]

    def fn(x, w):
        return op.fori_loop(1, 5, lambda i, c, w: op.tanh(c * w + i * 0.1), x, w)

    def reference(x, w):
        return jax.lax.fori_loop(1, 5, lambda i, c: jnp.tanh(c * w + i * 0.1), x)

    check_gradients(fn, reference, args)
    check_second_order(fn, reference, args)


class _Model(cg.Module):
    """A branch on the data and a bounded loop, with parameters passed as operands."""

    def __init__(self):
        rng = np.random.default_rng(3)
        super().__init__(inputs=(cg.Variable("x"),))
        self.W = cg.Parameter("W", jnp.asarray(rng.normal(size=(4, 4)) * 0.5, jnp.float32))

    def call(self, x):
        y = op.cond(op.sum(x) > 0, lambda x, W: op.tanh(x @ W), lambda x, W: x * 0.5, x, self.W)
        return op.fori_loop(0, 3, lambda i, h, W: op.tanh(h @ W) + h, y, self.W)


def _reference(W, x):
    y = jax.lax.cond(jnp.sum(x) > 0, lambda x: jnp.tanh(x @ W), lambda x: x * 0.5, x)
    return jax.lax.fori_loop(0, 3, lambda i, h: jnp.tanh(h @ W) + h, y)


def test_compiled_training_step_matches_jax():
    model = _Model()
    W0 = jnp.array(model.W.value)
    step = TrainStep(model, lambda out, t: op.mean((out - t) ** 2), optim.SGD(0.1))
    x = jnp.asarray(np.random.default_rng(4).normal(size=(5, 4)), jnp.float32)
    for sign in (1.0, -1.0):  # both branches, one compiled program
        W = jnp.array(model.W.value)
        step(sign * x, jnp.zeros((5, 4)))
        g = jax.grad(lambda W, s=sign: jnp.mean(_reference(W, s * x) ** 2))(W)
        np.testing.assert_allclose(model.W.value, W - 0.1 * g, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(model.W.value, W0)


def test_while_loop_runs_and_refuses_to_differentiate():
    out = op.while_loop(lambda c: op.sum(c) < 10.0, lambda c: c * 2.0, jnp.ones(3))
    np.testing.assert_array_equal(
        out.value, jax.lax.while_loop(lambda c: jnp.sum(c) < 10.0, lambda c: c * 2.0, jnp.ones(3))
    )
    jitted = jax.jit(lambda x: op.while_loop(lambda c, s: op.sum(c) < s, lambda c, s: c + 1.0, x, 7.0).value)
    np.testing.assert_array_equal(jitted(jnp.zeros(2)), [4.0, 4.0])
    with pytest.raises(cg.GradientError, match=r"while_loop: op.while_loop is forward-only.*op.fori_loop"):
        zkynet.grad(lambda x: op.sum(op.while_loop(lambda c: op.sum(c) < 10.0, lambda c: c * 2.0, x)))(jnp.ones(3))
    constant = op.while_loop(lambda c: op.sum(c) < 10.0, lambda c: c * 2.0, op.stop_gradient(jnp.ones(3)))
    assert not constant.requires_grad


def test_branches_must_be_closed():
    class Leaky(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),))
            self.w = cg.Parameter("w", jnp.ones(3))

        def call(self, x):
            y = x * 2.0
            return op.cond(op.sum(x) > 0, lambda a: a * y, lambda a: a, x)  # y: a node of the model

    with pytest.raises(cg.ValueTypeError, match=r"cond: the true branch reads .* pass that node as an operand"):
        Leaky()(jnp.ones(3))

    class Hidden(Leaky):
        def call(self, x):
            return op.cond(op.sum(x) > 0, lambda a: a * self.w, lambda a: a, x)  # a parameter not passed

    with pytest.raises(cg.UnregisteredParameterError, match=r"cond: the true branch uses a parameter it was not given"):
        Hidden()(jnp.ones(3))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: op.cond(jnp.ones(2) > 0, lambda a: a, lambda a: a, jnp.ones(2)), cg.ValueTypeError, r"boolean scalar"),
        (
            lambda: op.cond(jnp.asarray(True), lambda a: a, lambda a: a[0], jnp.ones(2)),
            cg.ShapeError,
            r"cond: cannot apply",
        ),
        (
            lambda: op.fori_loop(0, jnp.asarray(3), lambda i, c: c, jnp.ones(2)),
            cg.ValueTypeError,
            r"upper must be a Python int",
        ),
        (lambda: op.fori_loop(0, 3, lambda i, c: c[0], jnp.ones(2)), cg.ShapeError, r"keep the carry's shape"),
        (
            lambda: op.cond(jnp.asarray(True), lambda a: (a, a), lambda a: (a, a), jnp.ones(2)),
            cg.ShapeError,
            r"returned 2 outputs",
        ),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_an_empty_loop_returns_its_start():
    x = jnp.ones(3)
    assert op.fori_loop(3, 3, lambda i, c: c * 2.0, x).value is not None
    np.testing.assert_array_equal(op.fori_loop(3, 1, lambda i, c: c * 2.0, x).value, x)
