"""Each mistake a user can make gets a specific error that says what went wrong."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet.framework import cg, op
from zkynet.framework.errors import ZkynetError
from zkynet.models.toy import CompositeModel_NoWeightSharing_SameInputs, SimpleModel


def test_too_few_inputs():
    with pytest.raises(cg.InputCountError, match=r"SimpleModel takes 1 input\(s\) \(x\); missing: x"):
        SimpleModel()()


def test_extra_inputs_warn_and_are_ignored():
    # The seed document calls the one-input composite as m(3, 4): that keeps working,
    # with a warning naming what was ignored.
    with pytest.warns(UserWarning, match="takes 1 input.*called with 2; ignoring"):
        result = CompositeModel_NoWeightSharing_SameInputs()(3, 4)
    assert result.value == 2 * 36


def test_inputs_by_keyword():
    m = SimpleModel()
    assert m(x=3).value == 36
    with pytest.raises(cg.UnknownNameError, match="no input named 'y'"):
        m(y=3)
    with pytest.raises(cg.InputCountError, match="got input 'x' twice"):
        m(3, x=3)


def test_operator_with_wrong_number_of_inputs():
    with pytest.raises(cg.InputCountError, match=r"add takes 2 input\(s\) \(a, b\), got 3"):
        op.add(1, 2, 3)
    with pytest.raises(cg.InputCountError, match=r"exp takes 1 input\(s\) \(x\), got 2"):
        op.exp(1, 2)


def test_unknown_param_and_input_names():
    m = SimpleModel()
    with pytest.raises(cg.UnknownNameError, match="SimpleModel has no parameter named 'v'; its parameters are: w"):
        m.param("v")
    with pytest.raises(cg.UnknownNameError, match="SimpleModel has no input named 'y'; its inputs are: x"):
        m.input("y")
    assert isinstance(cg.UnknownNameError("x"), LookupError)


class Pair(cg.Module):
    def __init__(self, fn):
        super().__init__(inputs=(cg.Variable("a"), cg.Variable("b")))
        self.fn = fn

    def call(self, a, b):
        return self.fn(a, b)


@pytest.mark.parametrize(
    "fn, a, b, name",
    [
        (op.add, jnp.ones(3), jnp.ones(4), "add"),
        (op.mult, jnp.ones((2, 3)), jnp.ones((3, 2)), "mult"),
        (op.matmul, jnp.ones((2, 3)), jnp.ones((4, 5)), "matmul"),
        (lambda a, b: op.concat([a, b], axis=0), jnp.ones((2, 3)), jnp.ones((2, 4)), "concat"),
        (lambda a, b: op.conv2d(a, b), jnp.ones((1, 3, 5, 5)), jnp.ones((2, 4, 3, 3)), "conv2d"),
    ],
)
def test_shape_mismatch_names_the_operator_and_both_shapes(fn, a, b, name):
    with pytest.raises(cg.ShapeError) as error:
        Pair(fn)(a, b)
    message = str(error.value)
    assert message.startswith(f"Pair/{name}: cannot apply to inputs")
    assert f"float32{list(a.shape)} and float32{list(b.shape)}" in message
    assert isinstance(error.value, ValueError)


def test_reshape_to_a_wrong_size():
    with pytest.raises(cg.ShapeError, match=r"reshape: cannot apply to inputs float32\[2, 3\]"):
        op.reshape(jnp.ones((2, 3)), (4, 2))


@pytest.mark.parametrize("bad", ["3", None, object(), {"x": 1}, ["a", "b"], [[1, 2], [3]]])
def test_non_numeric_values(bad):
    with pytest.raises(cg.ValueTypeError, match="input 'x' of SimpleModel"):
        SimpleModel()(bad)
    with pytest.raises(cg.ValueTypeError):
        op.exp(bad)


def test_non_numeric_parameter():
    with pytest.raises(cg.ValueTypeError, match="parameter 'w': expected a number or a numeric array"):
        cg.Parameter("w", "one")


def test_grad_before_back():
    m = SimpleModel()
    with pytest.raises(cg.BackwardNotRunError, match="call back"):
        m(3).grad(m.param("w"))


def test_grad_of_something_the_graph_never_used():
    m, other = SimpleModel(), SimpleModel()
    result = m(3)
    result.back()
    with pytest.raises(cg.GradientError, match="parameter 'w' was not used by this graph"):
        result.grad(other.param("w"))
    with pytest.raises(cg.GradientError, match="input 'x' was not used"):
        result.grad(other.input("x"))
    with pytest.raises(cg.GradientError, match="is not part of this graph"):
        result.grad(other(3).root)
    with pytest.raises(cg.ValueTypeError, match="grad\\(\\) takes a Parameter"):
        result.grad("w")


def test_cotangent_of_the_wrong_shape():
    m = SimpleModel()
    result = m(jnp.ones(3))
    with pytest.raises(cg.ShapeError, match=r"shaped like the output \(3,\), got \(2,\)"):
        result.back(jnp.ones(2))


def test_passing_a_variable_template_as_a_value():
    class Wrong(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),))

        def call(self, x):
            return op.exp(self.input("x"))

    with pytest.raises(cg.ValueTypeError, match="is an input slot, not a value"):
        Wrong()(1.0)


def test_bad_declarations():
    with pytest.raises(TypeError, match=re.escape("must be a cg.Variable")):
        cg.Module(inputs=("x",))
    with pytest.raises(ValueError, match="names must be unique"):
        cg.Module(inputs=(cg.Variable("x"), cg.Variable("x")))
    with pytest.raises(TypeError, match="non-empty string name"):
        cg.Variable("")
    with pytest.raises(NotImplementedError, match="must define call"):
        cg.Module(inputs=(cg.Variable("x"),))(1)


def test_every_error_is_a_zkynet_error():
    for error in (
        cg.InputCountError,
        cg.UnknownNameError,
        cg.ValueTypeError,
        cg.ShapeError,
        cg.GradientError,
        cg.BackwardNotRunError,
    ):
        assert issubclass(error, ZkynetError)


@pytest.mark.parametrize(
    ("call", "name", "got"),
    [
        (lambda x: op.mean(x, axis="a"), "mean", "str 'a'"),
        (lambda x: op.max(x, axis=("a", 0)), "max", "tuple ('a', 0)"),
        (lambda x: op.sum(x, axis=1.5), "sum", "float 1.5"),
        (lambda x: op.softmax(x, axis=True), "softmax", "bool True"),
    ],
)
def test_an_axis_that_is_not_an_int_is_refused_by_the_operator(call, name, got):
    # a string would reach JAX as a named axis ("unbound axis name"), far from the mistake
    with pytest.raises(
        cg.ValueTypeError, match=re.escape(f"{name}: axis must be an int, a tuple of ints or None, got {got}")
    ):
        call(jnp.ones((2, 3)))
    assert op.sum(jnp.ones((2, 3)), axis=(0, -1)).value == 6  # ints, negative ones and tuples still work


def test_dropout_needs_a_prng_key():
    x = jnp.ones((2, 3))
    with pytest.raises(cg.ValueTypeError, match=r"dropout: key must be a PRNG key .*got int32\[\]"):
        op.dropout(x, 3)
    with pytest.raises(cg.ValueTypeError, match=r"got float32\[2\]"):
        op.dropout(x, jnp.ones(2))
    for key in (jax.random.PRNGKey(0), jax.random.key(0)):
        kept = op.dropout(x, key, 0.5).value
        assert set(np.unique(kept)) <= {0.0, 2.0}


def test_load_state_dict_wants_a_mapping():
    m = SimpleModel()
    for bad in (None, [("w", 1.0)], 3):
        with pytest.raises(cg.StateDictError, match=r"expected a mapping \{name: array\}"):
            m.load_state_dict(bad)
    m.load_state_dict({"w": 2})
    assert m(3).value == (3 + 2) * 9


def test_astype_and_reductions_name_a_bad_dtype_or_axis():
    with pytest.raises(cg.ValueTypeError, match=r"astype: 'notadtype' is not a dtype"):
        op.astype(jnp.ones(3), "notadtype")
    for axis in (5, -3, (0, 2)):
        with pytest.raises(cg.ShapeError, match=r"mean: .*axis -?\d is out of range for a value of 2 dimension\(s\)"):
            op.mean(jnp.ones((2, 3)), axis=axis)


def test_a_rule_that_raises_on_its_cotangent_is_named():
    class WrongPartial(cg.Operator):
        input_names = ("x",)

        def call(self, x):
            return x.value * 2

        def _gradfn(self, inpt):
            return lambda x: jnp.ones(2)  # shaped (2,) for a (3,) input

    class M(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),))

        def call(self, x):
            return op.sum(WrongPartial()(x))

    result = M()(jnp.ones(3))
    with pytest.raises(cg.BackwardRuleError, match=r"M/wrong_partial: WrongPartial.vjp failed .*incompatible shapes"):
        result.back()
