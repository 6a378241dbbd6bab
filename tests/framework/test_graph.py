"""Graph building, composition, back()/grad() semantics, custom operators,
deep graphs and JAX transformations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet.framework import cg, op
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


def test_a_scan_applied_twice_keeps_each_forward_on_its_own_node():
    class Cell(cg.Module):
        def __init__(self):
            super().__init__(
                inputs=(cg.Variable("x"), cg.Variable("h")),
                params=(cg.Parameter("U", jnp.array([[0.5, -0.3], [0.2, 0.9]])),),
            )

        def call(self, x, h):
            return op.tanh(x + h @ self.param("U"))

    cell = Cell()
    loop = op.Scan(cell, n_xs=1, n_carry=1)
    state = dict(vars(loop))

    class Twice(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("a"), cg.Variable("b")))
            self.cell = cell

        def call(self, a, b):
            h0 = jnp.zeros((1, 2))
            return op.sum(loop(a, h0, cell.param("U")) * loop(b, h0, cell.param("U")))

    def reference(a, b, U):
        def run(xs):
            return jax.lax.scan(lambda h, x: (jnp.tanh(x + h @ U),) * 2, jnp.zeros((1, 2)), xs)[1]

        return jnp.sum(run(a) * run(b))

    a = jnp.linspace(-1, 1, 8).reshape(4, 1, 2)
    b = jnp.linspace(2, -1, 8).reshape(4, 1, 2)
    m = Twice()
    result = m(a, b)
    result.back()
    expected = jax.grad(reference, argnums=(0, 1, 2))(a, b, cell.param("U").value)
    for got, want in zip(
        [result.grad(m.input("a")), result.grad(m.input("b")), result.grad(cell.param("U"))], expected, strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert vars(loop) == state  # the operator itself was never written to
