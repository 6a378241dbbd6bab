"""zkynet.gradcheck, the public gradient checker: right rules pass (operators with
arguments, modules with parameters, broadcasting shapes), wrong ones are caught with
the function, input, index and both values named, with or without a reference."""

import jax.numpy as jnp
import numpy as np
import pytest

from zkynet.framework import cg, op
from zkynet.gradcheck import (
    GradientCheckError,
    GradientReport,
    broadcasting_shapes,
    check_gradients,
    check_operator,
    positive,
)


class Scale(cg.Operator):
    """factor * x: an operator with an argument."""

    input_names = ("x",)

    def __init__(self, factor, wrong=False):
        super().__init__()
        self.factor, self.wrong = factor, wrong

    def call(self, x):
        return self.factor * x.value

    def vjp(self, g, out, x):
        return ((self.factor + (0.5 if self.wrong else 0)) * g,)


class Clip(cg.Operator):
    input_names = ("x",)

    def __init__(self, low, high, wrong_at=None):
        super().__init__()
        self.low, self.high, self.wrong_at = low, high, wrong_at

    def call(self, x):
        return jnp.clip(x.value, self.low, self.high)

    def vjp(self, g, out, x):
        inside = (x.value > self.low) & (x.value < self.high)
        if self.wrong_at == "outside":  # a plausible slip: gradient 1 everywhere
            inside = jnp.ones_like(inside)
        return (jnp.where(inside, g, 0),)


class Hypot(cg.Operator):
    """sqrt(a^2 + b^2), broadcasting; `wrong` forgets the b term's factor."""

    input_names = ("a", "b")

    def __init__(self, wrong=False):
        super().__init__()
        self.wrong = wrong

    def call(self, a, b):
        return jnp.sqrt(a.value**2 + b.value**2)

    def vjp(self, g, out, a, b):
        return g * a.value / out, g * (1 if self.wrong else b.value) / out


def test_right_rules_pass_on_broadcasting_shapes_with_and_without_a_reference():
    reports = check_operator(Scale(3.0), reference=lambda x: 3.0 * x)
    assert len(reports) == 3 and all(isinstance(r, GradientReport) for r in reports)
    assert max(reports[0].worst.values()) <= 1 and "scale passed, wrt x" in str(reports[0])
    check_operator(Clip(-0.5, 0.5), reference=lambda x: jnp.clip(x, -0.5, 0.5))
    check_operator(Hypot(), reference=lambda a, b: jnp.sqrt(a**2 + b**2), trials=5)
    check_operator(Hypot())  # finite differences only


def test_the_shapes_broadcast_each_way():
    plans = broadcasting_shapes(2, trials=4, seed=3)
    assert plans[0] == [(2, 3), (2, 3)] and () in plans[2]
    assert any(a != b for a, b in plans[1:2])
    for plan in plans:
        np.broadcast_shapes(*plan)  # they do broadcast together
    assert broadcasting_shapes(1)[1] == [(3, 1, 4)]


@pytest.mark.parametrize("reference", [None, lambda x: 3.0 * x], ids=["finite differences", "reference"])
def test_a_wrong_rule_is_named_with_input_index_and_both_values(reference):
    with pytest.raises(GradientCheckError) as caught:
        check_operator(Scale(3.0, wrong=True), reference=reference)
    error = caught.value
    assert isinstance(error, AssertionError)
    assert error.function == "scale" and error.input == "x" and len(error.index) == 2  # the worst element
    assert error.ours == pytest.approx(error.expected * 3.5 / 3)
    assert ("reference vjp" if reference else "finite differences") in error.check
    message = str(error)
    assert (
        message.startswith("scale: d/dx: vjp (back(cotangent)) vs")
        and f"at x[{error.index[0]}, {error.index[1]}]: ours" in message
    )
    assert "6 of 6 element(s) out of tolerance" in message and "Inputs: x float64[2, 3]" in message


def test_a_rule_wrong_only_in_part_of_its_domain_is_caught_there():
    x = np.array([[-2.0, 0.1], [0.2, 3.0]])
    with pytest.raises(GradientCheckError) as caught:
        check_gradients(Clip(-1, 1, wrong_at="outside"), None, [x])
    assert caught.value.index == (0, 0) and caught.value.mismatches == 2  # the two clipped elements


def test_a_wrong_rule_for_the_second_input_under_broadcasting():
    with pytest.raises(GradientCheckError) as caught:
        check_gradients(Hypot(wrong=True), lambda a, b: jnp.sqrt(a**2 + b**2), [np.ones((2, 3)), np.full((3,), 2.0)])
    assert caught.value.input == "b" and caught.value.function == "hypot"


def test_modules_are_checked_for_their_inputs_and_parameters():
    class Model(cg.Module):
        def __init__(self, wrong):
            super().__init__(inputs=(cg.Variable("x"),), params=(cg.Parameter("w", jnp.array([0.5, -1.0, 2.0])),))
            self.wrong = wrong

        def call(self, x):
            return op.sum(Scale(2.0, self.wrong)(x * self.param("w")), axis=0)

    def reference(params, x):
        return jnp.sum(2.0 * x * params["w"], axis=0)

    report = check_gradients(Model(False), reference, [np.random.default_rng(0).normal(size=(4, 3))])
    assert report.inputs == ["x", "param 'w'"]
    with pytest.raises(GradientCheckError, match=r"^Model: d/dx"):
        check_gradients(Model(True), reference, [np.ones((4, 3))])
    with pytest.raises(GradientCheckError, match=r"d/dparam 'w'"):
        check_gradients(Model(True), reference, [np.ones((4, 3))], argnums=[])  # parameters only


def test_big_inputs_use_random_directions():
    x = np.random.default_rng(1).normal(size=(40, 40))
    report = check_gradients(op.tanh, None, [x])  # 1600 x 1600 elements: no full Jacobian
    assert any("random direction" in k for k in report.worst)
    with pytest.raises(GradientCheckError, match="along a random direction"):
        check_gradients(Scale(1.0, wrong=True), None, [x])


def test_large_values_do_not_fail_on_rounding():
    """exp(12) ~ 1.6e5: finite differences carry rounding ~1e-5 there, which the
    tolerance accounts for (from the function's own values), not a looser rtol."""
    check_gradients(op.exp, jnp.exp, [np.full((3,), 12.0)])
    check_operator(op.Log(), jnp.log, sample=positive)


def test_lambdas_are_named_by_their_operators_and_integer_args_are_left_alone():
    with pytest.raises(GradientCheckError, match=r"^lambda over take, scale: d/dx"):
        check_gradients(lambda x, i: Scale(1.0, wrong=True)(op.take(x, i)), None, [np.ones((3, 2)), np.array([2, 0])])
    report = check_gradients(
        lambda x, i: op.take(x, i), lambda x, i: jnp.take(x, i, axis=0), [np.ones((3, 2)), np.array([2, 0])]
    )
    assert report.inputs == ["x"]


def test_misuse_is_explained():
    with pytest.raises(TypeError, match="must return one node"):
        check_gradients(lambda x: (x, x), None, [np.ones(2)])
    with pytest.raises(TypeError, match="only floating outputs"):
        check_gradients(lambda x: op.getitem(jnp.arange(3), 1), None, [np.ones(2)])
    with pytest.raises(TypeError, match="give `shapes`"):
        check_operator(lambda x: x)
