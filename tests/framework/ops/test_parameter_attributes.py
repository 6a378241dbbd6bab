"""Parameters as attributes: `self.W = cg.Parameter("W", w0)` in __init__ is registered
like a submodule (named_parameters, param(), state_dict, TrainStep, checkpoints), in
lists and dicts too; the seed's `params=(...)` works unchanged, mixed with them."""

import jax.numpy as jnp
import numpy as np
import pytest

from zkynet import optim
from zkynet.framework import cg, op
from zkynet.framework.compile import TrainStep


class Affine(cg.Module):
    def __init__(self, n, m):
        super().__init__(inputs=(cg.Variable("x"),))
        self.W = cg.Parameter("W", jnp.ones((n, m)) * 0.1)
        self.b = cg.Parameter("b", jnp.zeros(m))

    def call(self, x):
        return x @ self.W + self.b


class Mixed(cg.Module):
    """A declared parameter, attribute ones, a list of them, a submodule."""

    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"),), params=(cg.Parameter("scale", jnp.ones(2)),))
        self.layer = Affine(3, 2)
        self.extra = [cg.Parameter("e0", jnp.ones(2)), cg.Parameter("e1", jnp.ones(2))]
        self.table = {"bias": cg.Parameter("bias", jnp.zeros(2))}

    def call(self, x):
        y = self.layer(x) * self.param("scale")
        return y * self.extra[0] + self.extra[1] * self.table["bias"]


def test_attribute_parameters_are_registered():
    model = Mixed()
    assert list(model.named_parameters()) == ["scale", "e0", "e1", "bias", "layer/W", "layer/b"]
    assert model.param("e1") is model.extra[1] and model.layer.param("W") is model.layer.W
    assert set(model.state_dict()) == set(model.named_parameters())
    graph = model(jnp.ones((4, 3)))  # no UnregisteredParameterError
    graph.back(jnp.ones((4, 2)))
    np.testing.assert_allclose(graph.grad(model.layer.W), np.full((3, 2), 4.0))


def test_training_updates_attribute_parameters():
    model = Affine(3, 2)
    step = TrainStep(model, lambda out, t: op.mean((out - t) ** 2), optim.SGD(0.5))
    before = jnp.array(model.W.value)
    step(jnp.ones((4, 3)), jnp.ones((4, 2)))
    assert not np.array_equal(model.W.value, before)
    assert set(step.state_dict()["params"]) == {"W", "b"}


def test_the_seeds_declared_parameters_are_unchanged():
    class Seed(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),), params=(cg.Parameter("w", 1.0),))

        def call(self, x):
            return (x + self.param("w")) * x * x

    graph = Seed()(3.0)
    graph.back()
    assert float(graph.grad(graph.module.param("w"))) == 9 and float(graph.grad(graph.module.inputs[0])) == 33


def test_a_parameter_both_declared_and_held_is_listed_once():
    w = cg.Parameter("w", jnp.ones(2))

    class Both(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),), params=(w,))
            self.w = w

        def call(self, x):
            return x * self.w

    assert list(Both().named_parameters()) == ["w"]


def test_two_parameters_with_one_name_are_refused():
    class Clash(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),), params=(cg.Parameter("W", jnp.ones(2)),))
            self.weight = cg.Parameter("W", jnp.ones(2))

        def call(self, x):
            return x * self.weight

    with pytest.raises(cg.NameCollisionError, match=r"two different parameters are both named 'W'"):
        Clash().named_parameters()


def test_a_parameter_set_after_init_is_found_too():
    model = Affine(2, 2)
    model.gain = cg.Parameter("gain", jnp.ones(2))
    assert "gain" in model.named_parameters()
