"""Gradients as graphs on modules: `back(create_graph=True)`, `cg.gradients` inside a
module's call (a WGAN-GP gradient penalty trained by TrainStep), and the errors of
derivatives of derivatives and forward mode. JAX's autodiff computes the references
first; zkynet then runs with it made to fail."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zkynet
from tests.autodiff_guard import refuse_jax_autodiff
from zkynet import optim
from zkynet.framework import cg, op
from zkynet.framework.compile import TrainStep
from zkynet.models.fcn import Linear

RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 4)).astype(np.float32)
ONES = np.ones((5, 1), np.float32)


class Critic(cg.Module):
    """A small critic: linear, softplus, layer norm, linear; one score per row."""

    def __init__(self, key=0):
        super().__init__(inputs=(cg.Variable("x"),))
        self.hidden = Linear(4, 8, key=key)
        self.score = Linear(8, 1, key=key + 1)

    def call(self, x):
        return self.score(op.layer_norm(op.softplus(self.hidden(x))))


def critic_reference(params, x):
    h = jax.nn.softplus(x @ params["hidden/W"] + params["hidden/b"])
    h = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-5)
    return h @ params["score/W"] + params["score/b"]


def values(model):
    return {name: p.value for name, p in model.named_parameters().items()}


def close(a, b, rtol=1e-4, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- back(create_graph=True)


def test_a_gradient_node_equals_the_gradient_and_is_differentiable_again():
    critic = Critic()
    params, weight = values(critic), critic.hidden.param("W")

    def penalty(w):  # d/dW of sum(g^2) + sum(scores), g = d sum(scores) / dW
        g = jax.grad(lambda w2: jnp.sum(critic_reference(dict(params, **{"hidden/W": w2}), X)))(w)
        return jnp.sum(g * g) + jnp.sum(critic_reference(dict(params, **{"hidden/W": w}), X))

    expected = jax.grad(penalty)(params["hidden/W"])
    with refuse_jax_autodiff():
        first = critic(X)
        first.back(ONES)
        result = critic(X)
        result.back(ONES, create_graph=True)
        g = result.grad(weight)
        assert isinstance(g, cg.OperatorNode)
        close(g.value, first.grad(weight), rtol=1e-6)
        # usable in further computation, and differentiable again
        total = op.sum(g * g) + op.sum(result.root)
        (again,) = cg.gradients(total, [result.node(weight)], create_graph=False)
        # through a scalar output's plain back(create_graph=True) too
        scalar = zkynet.grad(lambda x: op.sum(critic(x).root))(X)
    close(again, expected)
    assert scalar.shape == X.shape


def test_back_create_graph_twice_replaces_the_gradients():
    """Documented in back(): each back() replaces the gradients of the one before (nothing
    accumulates, unlike PyTorch's .grad)."""
    critic = Critic()
    weight = critic.hidden.param("W")
    reference = critic(X)
    reference.back(3 * ONES)
    result = critic(X)
    result.back(ONES, create_graph=True)
    once = result.grad(weight)
    result.back(3 * ONES, create_graph=True)
    twice = result.grad(weight)
    assert twice is not once
    close(twice.value, reference.grad(weight), rtol=1e-6)  # 3x the first, not 4x
    close(once.value * 3, twice.value, rtol=1e-6)  # the first gradient node is untouched
    result.back(2 * ONES)  # and a plain back() after it gives arrays again
    assert isinstance(result.grad(weight), jax.Array)
    close(result.grad(weight), 2 * once.value, rtol=1e-6)
    assert "nothing accumulates" in cg.ModuleGraph.back.__doc__


def test_back_create_graph_of_a_tensor_output_needs_a_cotangent():
    result = Critic()(X)
    with pytest.raises(
        cg.GradientError, match=r"back\(create_graph=True\) of an output shaped \(5, 1\) needs a cotangent"
    ):
        result.back(create_graph=True)
    with pytest.raises(cg.ShapeError, match=r"shaped like the output \(5, 1\), got \(5,\)"):
        result.back(np.ones(5, np.float32), create_graph=True)


def test_a_node_cotangent_makes_the_gradient_depend_on_it():
    """back(cotangent_node, create_graph=True): the vector-Jacobian product is linear in the
    cotangent, and differentiating it with respect to the cotangent gives J times a tangent
    (how forward mode is built)."""
    critic = Critic()
    weight = critic.hidden.param("W")
    u = cg.InputNode(jnp.asarray(RNG.normal(size=(5, 1)).astype(np.float32)), cg.Variable("u"))
    result = critic(X)
    result.back(u, create_graph=True)
    plain = critic(X)
    plain.back(u.value)
    close(result.grad(weight).value, plain.grad(weight), rtol=1e-6)
    tangent = RNG.normal(size=(4, 8)).astype(np.float32)
    (jt,) = cg.gradients(result.grad(weight), [u], cotangents=tangent, create_graph=False)
    params = values(critic)
    _, expected = jax.jvp(
        lambda w: critic_reference(dict(params, **{"hidden/W": w}), X), (params["hidden/W"],), (jnp.asarray(tangent),)
    )
    close(jt, expected)


# ----------------------------------------------------------------------------- a gradient penalty, trained


class GradientPenalty(cg.Module):
    """A WGAN-GP critic's objective: mean score of fake minus real, plus `weight` times the
    mean of (|| d score / d mixed || - 1)^2 at points mixed between them. The input
    gradient is a graph built inside this call, so training differentiates through it."""

    def __init__(self, critic, weight=10.0):
        super().__init__(inputs=(cg.Variable("real"), cg.Variable("fake"), cg.Variable("alpha")), name="wgan_gp")
        self.critic, self.weight = critic, weight

    def call(self, real, fake, alpha):
        mixed = alpha * real + (1 - alpha) * fake
        (slope,) = cg.gradients(op.sum(self.critic(mixed)), [mixed], create_graph=True)
        norms = op.sqrt(op.sum(slope * slope, axis=1) + 1e-12)
        penalty = op.mean(op.square(norms - 1))
        return op.mean(self.critic(fake)) - op.mean(self.critic(real)) + self.weight * penalty


def gradient_penalty_reference(params, real, fake, alpha, weight=10.0):
    mixed = alpha * real + (1 - alpha) * fake
    slope = jax.grad(lambda m: jnp.sum(critic_reference(params, m)))(mixed)
    penalty = jnp.mean((jnp.sqrt(jnp.sum(slope * slope, axis=1) + 1e-12) - 1) ** 2)
    return jnp.mean(critic_reference(params, fake)) - jnp.mean(critic_reference(params, real)) + weight * penalty


def _objective(output, targets):
    return output


def test_a_gradient_penalty_trains_through_train_step():
    real = RNG.normal(loc=1.0, size=(16, 4)).astype(np.float32)
    fake = RNG.normal(loc=-1.0, size=(16, 4)).astype(np.float32)
    alpha = RNG.uniform(size=(16, 1)).astype(np.float32)
    batch = tuple(jnp.asarray(b) for b in (real, fake, alpha, np.zeros(())))
    model = GradientPenalty(Critic(key=3))
    params = {name.removeprefix("critic/"): v for name, v in values(model).items()}
    expected_loss, expected = jax.value_and_grad(gradient_penalty_reference)(params, *batch[:3])

    with refuse_jax_autodiff():
        step = TrainStep(model, _objective, optim.SGD(1.0))  # p - 1.0 * g: the update is the gradient
        before = step.param_values()
        new, _, metrics = jax.jit(step.pure)(before, step.opt_state, batch, step.rng)
        close(metrics["loss"], expected_loss)
        for name, value in before.items():
            close(value - new[name], expected[name.removeprefix("critic/")], rtol=2e-4, atol=2e-5)

        trainer = TrainStep(model, _objective, optim.Adam(1e-2))
        losses = [float(trainer(*batch)["loss"]) for _ in range(40)]
        trained = {name.removeprefix("critic/"): jnp.array(v) for name, v in values(model).items()}  # steps donate
        last = float(trainer(*batch)["loss"])  # the trained weights' objective
    assert losses[-1] < losses[0] - 1.0, losses  # the critic learns to tell them apart
    assert last == pytest.approx(float(gradient_penalty_reference(trained, *batch[:3])), rel=1e-4, abs=1e-4)


# ----------------------------------------------------------------------------- errors


class SinFirstOrderOnly(cg.Operator):
    """A user's operator whose rule calls jnp directly: first order only."""

    input_names = ("x",)

    def call(self, x):
        return jnp.sin(x.value)

    def vjp(self, g, out, x):
        return (g * jnp.cos(x.value),)


class ScatterByHand(cg.Operator):
    """Another: its rule uses an array method (.at) on the input's value."""

    input_names = ("x",)

    def call(self, x):
        return x.value * 2

    def vjp(self, g, out, x):
        return (jnp.zeros(x.shape).at[:].set(2.0) * x.value.at[0].get() * 0 + 2 * g,)


class Wrapped(cg.Module):
    def __init__(self, operator):
        super().__init__(inputs=(cg.Variable("x"),), params=(cg.Parameter("w", jnp.ones(3)),))
        self.inner = Inner(operator)

    def call(self, x):
        return op.sum(self.inner(x * self.param("w")))


class Inner(cg.Module):
    def __init__(self, operator):
        super().__init__(inputs=(cg.Variable("x"),))
        self.operator = operator

    def call(self, x):
        return self.operator(op.tanh(x))


@pytest.mark.parametrize("operator", [SinFirstOrderOnly(), ScatterByHand()], ids=["jnp", "array_method"])
def test_second_order_through_an_operator_without_support_names_it_and_its_place(operator):
    name = type(operator).__name__
    model = Wrapped(operator)
    first = model(np.arange(3.0))
    first.back()  # first order works
    result = model(np.arange(3.0))
    with pytest.raises(cg.HigherOrderError, match=rf"Wrapped/inner/{re.escape(operator.functional_name)}: {name}") as e:
        result.back(create_graph=True)
    assert "zkynet.framework.xp" in str(e.value) and isinstance(e.value.__cause__, (TypeError, AttributeError))
    with pytest.raises(cg.HigherOrderError, match=name):
        zkynet.grad(zkynet.grad(lambda x: op.sum(operator(x))))(np.ones(3))
    with pytest.raises(cg.HigherOrderError, match=name):
        zkynet.jvp(lambda x: operator(x), (np.ones(3),), (np.ones(3),))
    assert zkynet.grad(lambda x: op.sum(operator(x)))(np.ones(3)).shape == (3,)  # first order still works


def test_jvp_tangents_must_match_their_primals():
    def f(x, y):
        return x * y

    x = np.ones(3, np.float32)
    with pytest.raises(cg.ShapeError, match=re.escape("tangent 1 is float32[2] but primal 1 is float32[3]")):
        zkynet.jvp(f, (x, x), (x, np.ones(2, np.float32)))
    with pytest.raises(cg.ShapeError, match=re.escape("tangent 0 is int32[3] but primal 0 is float32[3]")):
        zkynet.jvp(f, (x, x), (np.ones(3, np.int32), x))
    with pytest.raises(cg.ShapeError, match=re.escape("tangent 0 is float32[3] but primal 0 is float32[3, 1]")):
        zkynet.hvp(lambda a: op.sum(a * a), (np.ones((3, 1), np.float32),), (x,))
    with pytest.raises(cg.GradientError, match="jvp got 2 primal"):
        zkynet.jvp(f, (x, x), (x,))


def test_grad_refuses_integers_and_tensor_outputs():
    with pytest.raises(cg.GradientError, match=r"grad: argument 0 is int32; .* \(pass 2.0"):
        zkynet.grad(lambda x: x * x)(2)
    with pytest.raises(cg.GradientError, match=r"grad: the function must return a scalar, got shape \(3,\)"):
        zkynet.grad(lambda x: x * x)(np.ones(3, np.float32))
    with pytest.raises(cg.GradientError, match=r"hvp: the function must return a scalar"):
        zkynet.hvp(lambda x: x * x, (np.ones(3, np.float32),), (np.ones(3, np.float32),))
    with pytest.raises(cg.GradientError, match="must return one node built from zkynet operators, got float"):
        zkynet.grad(lambda x: 1.0)(2.0)
    with pytest.raises(cg.GradientError, match="argnums 2 is out of range for 1 argument"):
        zkynet.grad(lambda x: x, argnums=2)(2.0)
    with pytest.raises(cg.HigherOrderError, match=r"hessian.* inside another derivative"):
        zkynet.grad(lambda x: op.sum(zkynet.hessian(lambda y: op.sum(y * y))(x)))(np.ones(2, np.float32))
