"""The Operator base class (zkynet/framework/operator.py): custom operators, written
with elementwise partials, a vector-Jacobian product or built from other operators;
fusion (one cached XLA computation per operator, attributes and shape); what a vjp
declares it reads; and a hostile user's custom rules and integers: a vjp returning
the wrong number or shapes of cotangents, integer results that overflow int32."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.framework.one_input import value_and_grad
from zkynet.framework import cg, op
from zkynet.framework.errors import BackwardRuleError, NumericOverflowError
from zkynet.models.toy import SimpleModel


class Multiply(cg.Operator):
    """The seed document's custom operator, written with elementwise partials."""

    def __init__(self):
        super().__init__(inputs=(cg.Variable("a"), cg.Variable("b")))

    def call(self, a, b):
        return a.value * b.value

    def _gradfn(self, inpt):
        def _a_grad(a, b):
            return b.value

        def _b_grad(a, b):
            return a.value

        if inpt.short_name == "a":
            return _a_grad
        elif inpt.short_name == "b":
            return _b_grad
        raise ValueError(f"Unknown input for {self.functional_name}: {inpt.short_name}")


class RowNorm(cg.Operator):
    """A non-elementwise custom operator with a hand-written vector-Jacobian product."""

    input_names = ("x",)

    def call(self, x):
        return jnp.sqrt(jnp.sum(x.value**2, axis=-1))

    def vjp(self, g, out, x):
        return (g[..., None] * x.value / out[..., None],)


class SoftPlus(cg.Operator):
    """A custom operator composed of built-in ones: no derivative needed."""

    input_names = ("x",)

    def call(self, x):
        return op.log(op.exp(x) + 1)


def test_custom_operators():
    class UsesCustom(cg.Module):
        def __init__(self):
            super().__init__(
                inputs=(cg.Variable("x"),), params=(cg.Parameter("w", jnp.array([[1.0, -2.0], [0.5, 3.0]])),)
            )

        def call(self, x):
            return op.sum(SoftPlus()(RowNorm()(Multiply()(x, self.param("w")))))

    def reference(x, w):
        return jnp.sum(jnp.log(jnp.exp(jnp.linalg.norm(x * w, axis=-1)) + 1))

    m = UsesCustom()
    x = jnp.array([0.3, -0.7])
    result = m(x)
    result.back()
    assert {n.name for n in result.nodes} >= {"multiply", "row_norm", "exp", "log"}
    np.testing.assert_allclose(result.value, reference(x, m.param("w").value), rtol=1e-6)
    gx, gw = jax.grad(reference, argnums=(0, 1))(x, m.param("w").value)
    np.testing.assert_allclose(result.grad(m.input("x")), gx, rtol=1e-5)
    np.testing.assert_allclose(result.grad(m.param("w")), gw, rtol=1e-5)


def test_an_operator_without_a_derivative_says_so():
    class NoDerivative(cg.Operator):
        input_names = ("x",)

        def call(self, x):
            return x.value * 2

    class M(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),))

        def call(self, x):
            return NoDerivative()(x)

    result = M()(1.0)
    with pytest.raises(NotImplementedError, match="no_derivative defines neither _gradfn"):
        result.back()


def test_fused_operators_compile_once_per_operator_attributes_and_shape():
    from zkynet.framework.operator import _fused_call

    x = jnp.ones((3, 5, 7))
    before = _fused_call._cache_size()
    for _ in range(3):
        op.sum(x, axis=1)  # a new Sum operator each call, equal attributes
    assert _fused_call._cache_size() == before + 1
    op.sum(x, axis=2)
    op.sum(x, axis=2)
    assert _fused_call._cache_size() == before + 2


def test_fusion_tells_apart_attributes_that_compare_equal():
    x = jnp.arange(6.0).reshape(2, 3)
    assert x[1].shape == (3,)
    assert op.getitem(x, 1).shape == (3,) and op.getitem(x, True).shape == (1, 2, 3)
    np.testing.assert_array_equal(op.getitem(x, [1, 0]).value, x[np.array([1, 0])])
    np.testing.assert_array_equal(op.getitem(x, (1, 0)).value, x[1, 0])


def test_changing_an_operator_attribute_takes_effect():
    act = op.LeakyRelu(0.1)
    x = jnp.array([-2.0, 1.0])
    np.testing.assert_allclose(act(x).value, [-0.2, 1.0])
    act.negative_slope = 0.5
    np.testing.assert_allclose(act(x).value, [-1.0, 1.0])
    np.testing.assert_allclose(op.leaky_relu(jnp.array([-1.0, 0.0, 1.0]), 0.1).value, [-0.1, 0.0, 1.0])


def test_integer_indexing_in_a_loop_compiles_once():
    from zkynet.framework.operator import _fused_call

    x = cg.as_node(jnp.ones((7, 2, 3)))
    before = _fused_call._cache_size()
    steps = [x[t] for t in range(7)] + list(x)
    assert _fused_call._cache_size() == before + 1 and len(steps) == 14


FLAGGED = [  # (operator, inputs): each with vjp_uses_inputs and/or vjp_uses_out turned off
    (op.add, 2),
    (op.sub, 2),
    (op.mult, 2),
    (op.maximum, 2),
    (op.neg, 1),
    (op.square, 1),
    (op.sqrt, 1),
    (op.exp, 1),
    (op.log, 1),
    (op.abs, 1),
    (op.tanh, 1),
    (op.sigmoid, 1),
    (op.softplus, 1),
    (op.relu, 1),
    (op.Sum(axis=1), 1),
    (op.Mean(axis=0), 1),
    (op.Softmax(), 1),
    (op.LogSoftmax(), 1),
    (op.matmul, 2),
    (op.Reshape((9,)), 1),
    (op.Transpose(), 1),
    (op.BroadcastTo((2, 3, 3)), 1),
    (op.Concat(0), 2),
    (op.Stack(1), 2),
]


@pytest.mark.parametrize("operator, arity", FLAGGED, ids=[o.functional_name for o, _ in FLAGGED])
def test_vjp_reads_no_more_than_it_declares(operator, arity):
    """What an operator says its vjp does not read (scan then skips keeping it) must
    not change its vjp."""
    from zkynet.framework import cg

    rng = np.random.default_rng(0)

    def leaf(value):  # an input that wants its gradient
        return cg.InputNode(jnp.asarray(value), cg.Variable("x"))

    nodes = [leaf(rng.uniform(0.5, 2.0, size=(3, 3))) for _ in range(arity)]
    out = operator.call(*nodes)
    g = jnp.asarray(rng.normal(size=out.shape))
    expected = operator.vjp(g, out, *nodes)
    garbage = [leaf(jnp.full(n.shape, 7.0)) for n in nodes] if not operator.vjp_uses_inputs else nodes
    got = operator.vjp(g, jnp.full(out.shape, 7.0) if not operator.vjp_uses_out else out, *garbage)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b)
    assert not (operator.vjp_uses_inputs and operator.vjp_uses_out)


# ----------------------------------------------------------------------------- hostile: custom vjp


class TwoInputs(cg.Operator):
    """a * b with a backward rule that returns `count` cotangents."""

    input_names = ("a", "b")

    def __init__(self, count, shape=None):
        super().__init__()
        self.count, self.shape = count, shape

    def call(self, a, b):
        return a.value * b.value

    def vjp(self, g, out, a, b):
        cts = [g * b.value, g * a.value, g][: self.count]
        if self.shape is not None:
            cts[0] = jnp.ones(self.shape)
        return tuple(cts)


class Bare(cg.Operator):
    input_names = ("x",)

    def call(self, x):
        return 2 * x.value

    def vjp(self, g, out, x):
        return 2 * g  # not a tuple


class Pair(cg.Module):
    def __init__(self, operator):
        super().__init__(inputs=(cg.Variable("a"), cg.Variable("b")))
        self.operator = operator

    def call(self, a, b):
        return op.sum(self.operator(a, b))


@pytest.mark.parametrize(
    "count, got",
    [(1, "returned 1 cotangent(s) for 2 input(s) (a, b)"), (3, "returned 3 cotangent(s) for 2 input(s) (a, b)")],
)
def test_a_vjp_with_the_wrong_number_of_cotangents(count, got):
    result = Pair(TwoInputs(count))(jnp.ones(3), jnp.ones(3))
    with pytest.raises(BackwardRuleError, match=re.escape(f"Pair/two_inputs: TwoInputs.vjp {got}")):
        result.back()


def test_a_vjp_returning_a_bare_array():
    with pytest.raises(
        BackwardRuleError,
        match=r"Fn/bare: Bare.vjp returned ArrayImpl, not a tuple .*"
        r"`return \(g \* 2,\)`",
    ):
        value_and_grad(lambda x: op.sum(Bare()(x)), jnp.ones((3, 3)))


@pytest.mark.parametrize("shape", [(4,), (1,), (), (3, 2), (2, 4)], ids=str)
def test_a_cotangent_that_cannot_be_summed_to_its_input(shape):
    result = Pair(TwoInputs(2, shape))(jnp.ones(3), jnp.ones(3))
    with pytest.raises(
        BackwardRuleError,
        match=re.escape(
            f"Pair/two_inputs: TwoInputs.vjp returned a cotangent shaped {shape} for input 'a', which is shaped (3,)"
        ),
    ):
        result.back()


def test_a_cotangent_with_dims_broadcasting_did_not_make_is_refused():
    """(2, 3) for a (3,) input of a (3,) output: no broadcast in this operator made that
    leading axis, so summing it away would double the gradient (issue 26: it used to)."""
    m = Pair(TwoInputs(2, (2, 3)))
    result = m(jnp.ones(3), jnp.ones(3))
    with pytest.raises(BackwardRuleError, match=r"cotangent shaped \(2, 3\) for input 'a', which is shaped \(3,\)"):
        result.back()
    broadcast = Pair(TwoInputs(2, (2, 3)))(jnp.ones(3), jnp.ones((2, 3)))  # here the output is (2, 3): summed
    broadcast.back()
    np.testing.assert_array_equal(broadcast.grad(broadcast.module.input("a")), [2, 2, 2])


def test_the_checks_hold_under_jit():
    def f(a):
        result = Pair(TwoInputs(1))(a, a)
        result.back()

    with pytest.raises(BackwardRuleError, match="returned 1 cotangent"):
        jax.jit(f)(jnp.ones(3))


# ----------------------------------------------------------------------------- hostile: Python ints


def test_a_python_int_whose_result_overflows_int32_is_refused():
    with pytest.raises(NumericOverflowError) as error:
        SimpleModel()(2000)
    message = str(error.value)
    assert message.startswith("SimpleModel/mult: integer overflow: the exact result 8004000000 does not fit int32")
    assert "gave -585934592 instead" in message and "pass floats (e.g. 2000.0 for 2000)" in message


@pytest.mark.parametrize(
    "make",
    [
        lambda: SimpleModel()(np.array([3, 2000])),
        lambda: SimpleModel()(jnp.array(2000)),  # an explicit int32 array overflows the same way
        lambda: op.square(jnp.array([50_000])),
        lambda: op.neg(jnp.array(-(2**31), jnp.int32)),
        lambda: op.sum(jnp.full(3, 2**30, jnp.int32)),
        lambda: op.matmul(jnp.full((1, 2), 2**16, jnp.int32), jnp.full((2, 1), 2**15, jnp.int32)),
        lambda: op.pow(jnp.array(3), jnp.array(21)),
    ],
    ids=["np-array", "jnp-int32", "square", "neg-min", "sum", "matmul", "pow"],
)
def test_integer_arithmetic_that_overflows_is_refused(make):
    with pytest.raises(NumericOverflowError, match="integer overflow: the exact result"):
        make()


def test_ints_that_fit_keep_working_exactly():
    assert SimpleModel()(3).value == 36 and SimpleModel()(1000).value == 1001 * 10**6
    assert SimpleModel()(2000.0).value == pytest.approx(8.004e9, rel=1e-6)
    assert int(op.mult(jnp.array(-(2**31) + 1), 1).value) == -(2**31) + 1
    assert op.getitem(jnp.arange(3), 1).value == 1  # moving integers is never refused


def test_intended_wraparound_can_opt_out():
    class Hash(cg.Operator):
        input_names = ("x",)
        check_integer_overflow = False

        def call(self, x):
            return x.value * 1_000_003

    assert int(Hash()(jnp.array(5000)).value) == (5000 * 1_000_003 + 2**31) % 2**32 - 2**31


# ----------------------------------------------------------------------------- cotangents checked: dtype, axes


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
