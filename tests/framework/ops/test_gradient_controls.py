"""Gradient controls: op.stop_gradient, frozen parameters (cg.Parameter(trainable=False),
module.freeze/unfreeze: no gradient, no optimizer state, still saved), and cg.no_grad()
(evaluation that keeps nothing for a backward pass; EvalStep uses it)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zkynet
from zkynet import optim
from zkynet.framework import cg, op
from zkynet.framework.compile import EvalStep, TrainStep
from zkynet.models.fcn import Linear
from zkynet.models.rnn import Recurrent


def test_stop_gradient_to_second_order():
    def f(x):
        return op.sum(op.stop_gradient(x * x) * x + x**3)

    def reference(x):
        return jnp.sum(jax.lax.stop_gradient(x * x) * x + x**3)

    x = jnp.asarray([0.5, -1.5, 2.0])
    np.testing.assert_allclose(zkynet.grad(f)(x), jax.grad(reference)(x), rtol=1e-6)
    np.testing.assert_allclose(zkynet.hessian(f)(x), jax.hessian(reference)(x), rtol=1e-6)


class _Two(cg.Module):
    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"),))
        self.first, self.second = Linear(3, 4, key=0), Linear(4, 2, key=1)

    def call(self, x):
        return self.second(op.tanh(self.first(x)))


def _loss(out, t):
    return op.mean((out - t) ** 2)


def test_frozen_parameters_get_no_gradient_and_no_optimizer_state():
    model = _Two()
    model.first.freeze()
    assert [p.trainable for p in model.named_parameters().values()] == [False, False, True, True]
    frozen = {n: jnp.array(p.value) for n, p in model.first.named_parameters().items()}
    x, t = jnp.ones((5, 3)), jnp.zeros((5, 2))
    graph = model(x)
    graph.back(jnp.ones((5, 2)))
    assert not np.any(graph.grad(model.first.param("W")))  # frozen: zeros, and no work done for it
    step = TrainStep(model, _loss, optim.AdamW(1e-2, weight_decay=0.1))
    assert set(step.opt_state["m"]) == {"second/W", "second/b"}
    for _ in range(3):
        step(x, t)
    for name, value in frozen.items():  # not trained, not decayed
        np.testing.assert_array_equal(model.first.param(name).value, value)
    assert set(step.state_dict()["params"]) == set(model.named_parameters())  # still saved
    model.first.unfreeze()  # noticed at the next step: its optimizer state starts fresh, the others' is kept
    kept = jnp.array(step.opt_state["m"]["second/W"])
    step(x, t)
    assert set(step.opt_state["m"]) == {"first/W", "first/b", "second/W", "second/b"}
    assert not np.array_equal(model.first.param("W").value, frozen["W"])
    assert not np.array_equal(step.opt_state["m"]["second/W"], kept)  # updated from the kept slot


def test_a_parameter_declared_frozen():
    w = cg.Parameter("w", jnp.ones(3), trainable=False)
    assert not w.trainable
    w.trainable = True
    assert w.trainable
    state = cg.State("count", jnp.zeros(()))
    with pytest.raises(ValueError, match="not a trainable parameter"):
        state.trainable = True


def test_no_grad_keeps_nothing_for_a_backward_pass():
    model = _Two()
    x = jnp.ones((5, 3))
    with cg.no_grad():
        graph = model(x)
    np.testing.assert_allclose(graph.value, model(x).value, rtol=1e-6)
    assert graph.root.inputs == () and not graph.root.requires_grad
    with pytest.raises(cg.GradientError, match=r"built inside cg.no_grad\(\)"):
        graph.back(jnp.ones((5, 2)))
    assert model(x).root.inputs  # outside, graphs are whole again


def test_no_grad_drops_what_rules_would_read():
    q = jnp.ones((2, 3, 4))
    with cg.no_grad():
        node = op.attention(q, q, q)
    assert node.saved is None  # attention keeps its probabilities only for its rule
    assert op.attention(q, q, q).saved is not None


class _Sequence(cg.Module):
    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"),))
        self.rnn = Recurrent("lstm", 3, 4)

    def call(self, x):
        return self.rnn(x)[0]


def test_eval_step_builds_no_backward_state_and_scan_stacks_no_activations():
    model = _Sequence()
    x = jnp.ones((2, 5, 3))
    value = EvalStep(model, _loss, jit=False)(x, jnp.zeros((2, 5, 4)))["loss"]
    assert np.isfinite(value)
    with cg.no_grad():
        stacked = op.scan(model.rnn.cell, [jnp.zeros((2, 4))] * 2, [jnp.ones((5, 2, 16))])
    assert stacked.saved is None
    assert op.scan(model.rnn.cell, [jnp.zeros((2, 4))] * 2, [jnp.ones((5, 2, 16))]).saved is not None
