"""A backward rule's cotangents are checked before they reach a gradient: a floating dtype
(an integer one truncated a gradient of 2.5 to 2) and a shape that broadcasting in this
operator gave its input (a (4, 3) cotangent for a (3,) elementwise input was summed as if
broadcast: 4x the gradient)."""

import jax.numpy as jnp
import pytest

from zkynet.framework import cg, op
from zkynet.framework.errors import BackwardRuleError


class _IntegerRule(cg.Operator):
    input_names = ("x",)

    def call(self, x):
        return x.value * 2.5

    def vjp(self, g, out, x):
        return (jnp.full(x.shape, 2, jnp.int32),)


class _WideRule(cg.Operator):
    """The seed's style: _gradfn returns the partial, here with an extra axis."""

    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"),))

    def call(self, x):
        return x.value * 3

    def _gradfn(self, inpt):
        return lambda x: jnp.ones((4, *x.shape)) * 3


class _Summed(cg.Module):
    def __init__(self, operator):
        super().__init__(inputs=(cg.Variable("x"),))
        self.operator = operator

    def call(self, x):
        return op.sum(self.operator(x))


@pytest.mark.parametrize("create_graph", [False, True])
def test_an_integer_cotangent_for_a_float_input_is_refused(create_graph):
    result = _Summed(_IntegerRule())(jnp.ones(3))
    with pytest.raises(
        BackwardRuleError,
        match=r"_Summed/_integer_rule: _IntegerRule.vjp returned a cotangent of dtype int32 for input 'x'",
    ):
        result.back(create_graph=create_graph)


@pytest.mark.parametrize("create_graph", [False, True])
def test_a_cotangent_with_axes_the_output_does_not_have_is_refused(create_graph):
    result = _Summed(_WideRule())(jnp.ones(3))
    with pytest.raises(
        BackwardRuleError,
        match=r"cotangent shaped \(4, 3\) for input 'x', which is shaped \(3,\) \(the output \(3,\)\)",
    ):
        result.back(create_graph=create_graph)


def test_cotangents_that_broadcasting_made_are_summed_back():
    """Broadcasting's own cotangents stay accepted: leading axes and stretched 1s of the output."""
    a, b = cg.Parameter("a", jnp.ones((3, 1))), cg.Parameter("b", jnp.ones((2, 1, 4)))

    class Model(cg.Module):
        def __init__(self):
            super().__init__(params=(a, b))

        def call(self):
            return op.sum(a * b) + op.sum(op.matmul(jnp.ones((5, 3, 3)), a))

    result = Model()()
    result.back()
    assert result.grad(a).shape == (3, 1) and float(result.grad(a)[0, 0]) == pytest.approx(8 + 15)
    assert result.grad(b).shape == (2, 1, 4) and float(result.grad(b)[0, 0, 0]) == pytest.approx(3)
