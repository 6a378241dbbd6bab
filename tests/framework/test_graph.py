"""Graph building, composition, back()/grad() semantics, deep graphs, JAX
transformations, and values converted only when they fit their dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet.framework import cg, op
from zkynet.framework.errors import NumericOverflowError
from zkynet.models.toy import (
    CompositeModel_NoWeightSharing_DifferentInputs,
    CompositeModel_NoWeightSharing_SameInputs,
    CompositeModel_WeightSharing_DifferentInputs,
    CompositeModel_WeightSharing_SameInputs,
    SimpleModel,
)


def simple(x, w):
    return (x + w) * x**2


def test_simple_model_value_and_gradients():
    m = SimpleModel()
    result = m(3)
    assert result.value == 36
    result.back()
    assert result.grad(m.param("w")) == 9
    assert result.grad(m.input("x")) == 33


def test_each_call_builds_an_independent_graph():
    m = SimpleModel()
    first, second = m(3), m(3)
    assert first != second and first.root != second.root
    assert first.call_id != second.call_id
    assert {n.call_id for n in first.nodes} == {first.call_id}
    first.back()
    with pytest.raises(cg.BackwardNotRunError):  # back() on one graph says nothing of the other
        second.grad(m.param("w"))


def test_vector_input_gives_full_jacobian_equal_to_jacrev():
    m = SimpleModel(w0=1.5)
    x = jnp.array([3.0, 4.0, 5.0])
    result = m(x)
    np.testing.assert_allclose(result.value, simple(x, 1.5))
    result.back()
    np.testing.assert_allclose(result.grad(m.input("x")), jax.jacrev(simple, 0)(x, 1.5))
    np.testing.assert_allclose(result.grad(m.param("w")), jax.jacrev(simple, 1)(x, 1.5))


def test_cotangent_gives_vector_jacobian_product():
    m = SimpleModel(w0=jnp.array([[1.0], [2.0]]))  # (2, 1) parameter against a (3,) input
    x = jnp.array([1.0, -2.0, 0.5])
    ct = jnp.arange(6.0).reshape(2, 3)
    result = m(x)
    result.back(ct)
    _, pullback = jax.vjp(simple, x, m.param("w").value)
    gx, gw = pullback(ct)
    np.testing.assert_allclose(result.grad(m.input("x")), gx)
    np.testing.assert_allclose(result.grad(m.param("w")), gw)
    assert result.grad(m.param("w")).shape == (2, 1)


def test_tensor_input_and_output_jacobian_of_rank_3():
    class Layer(cg.Module):
        def __init__(self):
            super().__init__(
                inputs=(cg.Variable("x"),), params=(cg.Parameter("W", jnp.linspace(-1, 1, 12).reshape(4, 3)),)
            )

        def call(self, x):
            return op.tanh(x @ self.param("W"))

    m = Layer()
    x = jnp.linspace(-2, 2, 2 * 5 * 4).reshape(2, 5, 4)
    result = m(x)
    result.back()
    reference = jax.jacrev(lambda x, W: jnp.tanh(x @ W), argnums=(0, 1))(x, m.param("W").value)
    assert result.grad(m.input("x")).shape == (2, 5, 3, 2, 5, 4)
    np.testing.assert_allclose(result.grad(m.input("x")), reference[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.grad(m.param("W")), reference[1], rtol=1e-6, atol=1e-7)


COMPOSITES = [
    (
        CompositeModel_NoWeightSharing_DifferentInputs,
        (3.0, 4.0),
        lambda x1, x2, w1, w2: simple(x1, w1) + simple(x2, w2),
    ),
    (CompositeModel_WeightSharing_DifferentInputs, (3.0, 4.0), lambda x1, x2, w1: simple(x1, w1) + simple(x2, w1)),
    (CompositeModel_NoWeightSharing_SameInputs, (3.0,), lambda x1, w1, w2: simple(x1, w1) + simple(x1, w2)),
    (CompositeModel_WeightSharing_SameInputs, (3.0,), lambda x1, w1: simple(x1, w1) + simple(x1, w1)),
]


@pytest.mark.parametrize("model_class, inputs, reference", COMPOSITES)
def test_composite_gradients_match_jax(model_class, inputs, reference):
    m = model_class()
    params = [m._m1.param("w")] + ([m._m2.param("w")] if hasattr(m, "_m2") else [])
    result = m(*inputs)
    result.back()
    args = list(inputs) + [p.value.astype(float) for p in params]
    np.testing.assert_allclose(result.value, reference(*args))
    expected = jax.grad(reference, argnums=tuple(range(len(args))))(*args)
    got = [result.grad(v) for v in m.inputs] + [result.grad(p) for p in params]
    np.testing.assert_allclose(got, expected)


def test_shared_parameter_and_input_are_one_node_each():
    m = CompositeModel_WeightSharing_SameInputs()
    result = m(3)
    w_nodes = [n for n in result.nodes if isinstance(n, cg.ParameterNode)]
    x_nodes = [n for n in result.nodes if isinstance(n, cg.InputNode)]
    assert len(w_nodes) == 1 and len(x_nodes) == 1
    users = [n for n in result.nodes if x_nodes[0] in n.inputs]
    assert len(users) == 4  # add and square, in each of the two calls of m1


def test_nodes_record_the_module_call_that_made_them():
    m = CompositeModel_WeightSharing_DifferentInputs()
    result = m(3, 4)
    paths = {n.path for n in result.nodes}
    top = "CompositeModel_WeightSharing_DifferentInputs"
    assert {f"{top}/m1/mult", f"{top}/m1#2/mult", f"{top}/add", f"{top}/x1", f"{top}/m1/w"} <= paths


def test_nested_module_input_gradients():
    m = CompositeModel_NoWeightSharing_DifferentInputs()
    result = m(3.0, 4.0)
    result.back()
    assert result.grad(m._m1.input("x")) == result.grad(m.input("x1")) == 33
    shared = CompositeModel_WeightSharing_DifferentInputs()
    result = shared(3.0, 4.0)
    result.back()
    with pytest.raises(cg.GradientError, match="bound to 2 different values"):
        result.grad(shared._m1.input("x"))


def test_grad_of_an_intermediate_node():
    m = SimpleModel()
    result = m(3.0)
    result.back()
    square = next(n for n in result.nodes if n.name == "square")
    assert result.grad(square) == 4.0  # d/db (a * b) = a = x + w


def test_module_graph_as_input_chains_graphs():
    m1, m2 = SimpleModel(), SimpleModel(w0=2)
    first = m1(1.0)
    second = m2(first)  # x = 2
    assert second.value == 16
    second.back()
    assert second.grad(m2.param("w")) == 4
    x, w = 2, 2
    assert second.grad(first.root) == x**2 + 2 * x * (x + w)  # d/dx (x + w) x^2
    assert second.grad(m1.param("w")) == second.grad(first.root) * 1**2  # d first / d w1 = x1^2


def test_outputs_that_do_not_depend_on_a_used_parameter_get_zero_gradient():
    class Unused(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),), params=(cg.Parameter("w", 2.0),))

        def call(self, x):
            op.mult(x, self.param("w"))  # computed, then dropped
            return op.square(x)

    m = Unused()
    result = m(3.0)
    result.back()
    assert result.grad(m.param("w")) == 0


def test_multiple_outputs_take_one_cotangent_each():
    class Two(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),))

        def call(self, x):
            return op.square(x), op.exp(x)

    m = Two()
    result = m(jnp.array([0.0, 1.0]))
    assert isinstance(result.value, tuple)
    result.back((jnp.ones(2), jnp.array([1.0, 0.0])))
    np.testing.assert_allclose(result.grad(m.input("x")), [0.0 + 1.0, 2.0 + 0.0])
    with pytest.raises(cg.GradientError, match="one cotangent per output"):
        result.back()


def test_python_operators_on_nodes_and_parameters():
    class Syntax(cg.Module):
        def __init__(self):
            super().__init__(
                inputs=(cg.Variable("x"),),
                params=(
                    cg.Parameter("W", jnp.arange(6.0).reshape(2, 3) / 6),
                    cg.Parameter("b", jnp.array([0.5, -0.5, 1.0])),
                ),
            )

        def call(self, x):
            W, b = self.param("W"), self.param("b")
            h = x @ W + b  # (4, 3)
            h = 2 * h - h / 3 + 1 - (-h) ** 2
            h = np.float32(0.5) * h + jnp.ones(3)  # NumPy and JAX scalars/arrays on the left
            return op.sum(h[1:, 0] * h.T[2, :3] + h[0])

    def reference(x, W, b):
        h = x @ W + b
        h = 2 * h - h / 3 + 1 - (-h) ** 2
        h = 0.5 * h + jnp.ones(3)
        return jnp.sum(h[1:, 0] * h.T[2, :3] + h[0])

    m = Syntax()
    x = jnp.linspace(-1, 1, 8).reshape(4, 2)
    result = m(x)
    result.back()
    W, b = m.param("W").value, m.param("b").value
    np.testing.assert_allclose(result.value, reference(x, W, b), rtol=1e-6)
    for got, want in zip(
        [result.grad(m.input("x")), result.grad(m.param("W")), result.grad(m.param("b"))],
        jax.grad(reference, argnums=(0, 1, 2))(x, W, b),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_iterating_over_a_node_unstacks_its_first_axis():
    _a, b = cg.as_node(jnp.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(b.value, [3.0, 4.0])


@pytest.mark.slow  # its point is the size: 200k nodes built and differentiated eagerly
def test_backward_over_a_100k_node_chain():
    class Chain(cg.Module):
        def __init__(self, length):
            super().__init__(inputs=(cg.Variable("x"),))
            self.length = length

        def call(self, x):
            for _ in range(self.length):
                x = op.mult(x, 1.0001)
            return x

    m = Chain(100_000)
    result = m(1.0)
    result.back()
    assert len(result.nodes) == 200_001  # the input, 100k constants and 100k products
    np.testing.assert_allclose(result.grad(m.input("x")), 1.0001**100_000, rtol=1e-2)


def test_module_under_vmap_matches_a_loop():
    m = SimpleModel(w0=0.5)
    xs = jnp.array([1.0, -2.0, 3.0, 0.25])

    def value_and_grads(x):
        result = m(x)
        result.back()
        return result.value, result.grad(m.param("w")), result.grad(m.input("x"))

    batched = jax.vmap(value_and_grads)(xs)
    looped = [value_and_grads(x) for x in xs]
    for i in range(3):
        np.testing.assert_allclose(batched[i], jnp.stack([row[i] for row in looped]), rtol=1e-6)


def test_graph_building_traces_under_jit():
    m = SimpleModel(w0=0.5)

    @jax.jit
    def grad_w(x):
        result = m(x)
        result.back(jnp.ones_like(x))
        return result.grad(m.param("w"))

    x = jnp.array([1.0, 2.0])
    np.testing.assert_allclose(grad_w(x), jnp.sum(x**2))


def test_a_returned_parameter_uses_the_substituted_value():
    class Returns(cg.Module):
        def __init__(self):
            super().__init__(params=(cg.Parameter("mu", jnp.array([1.0, 2.0])),))

        def call(self):
            return op.sum(self.param("mu")), self.param("mu")

    m = Returns()
    result = cg.call_module(m, (), param_values={m.param("mu"): jnp.array([10.0, 20.0])})
    np.testing.assert_allclose(result.value[1], [10.0, 20.0])
    assert sum(isinstance(n, cg.ParameterNode) for n in result.nodes) == 1


def test_scalar_back_under_jit_leaves_no_tracer_behind():
    from zkynet.framework.graph import _ONES

    m = SimpleModel(w0=0.5)

    @jax.jit
    def value_after_back(x):
        result = m(x)
        result.back()
        return result.grad(m.param("w"))

    with jax.checking_leaks():
        value_after_back(jnp.float32(2.0))
    assert not any(isinstance(v, jax.core.Tracer) for v in _ONES.values())


def test_chained_graph_gradient_of_the_first_module_input():
    m1, m2 = SimpleModel(), SimpleModel()
    second = m2(m1(2.0))
    second.back()
    np.testing.assert_allclose(second.grad(m1.input("x")), second.grad(second.nodes[0]))


def test_fused_and_traced_paths_agree():
    m = SimpleModel(w0=jnp.array([0.5, -1.0]))
    x = jnp.array([[1.0, 2.0], [3.0, -4.0]])
    ct = jnp.array([[1.0, -1.0], [0.5, 2.0]])

    def grads(x):
        result = m(x)
        result.back(ct)
        return result.grad(m.param("w")), result.grad(m.input("x"))

    for eager, traced in zip(grads(x), jax.jit(grads)(x), strict=True):
        np.testing.assert_allclose(eager, traced, rtol=1e-6)


# ----------------------------------------------------------------------------- hostile: Python ints


@pytest.mark.parametrize(
    "value, message",
    [
        (2**40, "the integer 1099511627776 does not fit int32"),
        (-(2**31) - 1, "the integer -2147483649 does not fit int32"),
        (np.array([3, 2**40]), "the integer 1099511627776 does not fit int32"),
        (np.int64(2**33), "the integer 8589934592 does not fit int32"),
        ([10**20], "the integer 100000000000000000000 does not fit int32"),
        (np.array([2**33], np.uint64), "the integer 8589934592 does not fit uint32"),
        (1e300, "1e\\+300 is beyond float32's largest value"),
        (np.array([1.0, -1e39]), "-1e\\+39 is beyond float32's largest value"),
    ],
)
def test_values_that_do_not_fit_their_dtype_are_refused(value, message):
    with pytest.raises(NumericOverflowError, match=f"input 'x' of SimpleModel: {message}"):
        SimpleModel()(value)


def test_overflowing_constants_and_parameters_name_their_place():
    with pytest.raises(NumericOverflowError, match="mult: input 'b': the integer 1099511627776"):
        op.mult(jnp.ones(3), 2**40)
    with pytest.raises(NumericOverflowError, match="parameter 'w': the integer 4294967296"):
        cg.Parameter("w", 2**32)
