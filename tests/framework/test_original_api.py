"""Code written for the original zkynet runs unchanged beside our API: operator
classes called on values (op.Add()(a, b), op.Multiply()(a, b), op.Square()(x)),
Operator.gradfn(inpt) and node.grad(child), cg.get_all_nodes, node equality by call,
template and value, fcn.Linear(W0, b0) from initial arrays, and plot_cg with a save
path without extension. The code below is in the original's style (its tests:
test_basic_operations, test_cg_framework, test_model_linear, test_cg_forward,
test_cg_backward), run end to end."""

import copy
import os

import jax.numpy as jnp
import numpy as np
import pytest
from jax import jacrev

from zkynet.framework import cg, op
from zkynet.models import fcn
from zkynet.visual import plot_cg


class MyTestModel1(cg.Module):
    """f(x,w) = (x+w)*x^2, as the original tests wrote it (w a one-element array)."""

    def __init__(self, w0=1.0):
        w0 = jnp.array([w0])
        super().__init__(inputs=(cg.Variable("x"),), params=(cg.Parameter("w", w0),))

    def call(self, x):
        a = op.add(x, self.param("w"))
        b = op.square(x)
        c = op.mult(a, b)
        return c


class CompositeModel_WeightSharing_DifferentInputs(cg.Module):
    def __init__(self):
        super().__init__(inputs=(cg.Variable("x1"), cg.Variable("x2")))
        self._m1 = MyTestModel1(w0=2.0)

    def call(self, x1, x2):
        a = self._m1(x1)
        b = self._m1(x2)
        return op.add(a, b)


def model1fun(x, w):
    return (x + w) * x**2


def test_operator_classes_called_on_values_and_their_gradient_functions():
    add_op = op.Add()
    dfda_fn = add_op.gradfn(cg.Variable("a"))
    assert dfda_fn(jnp.array(1.0), jnp.array(2.0)).value == 1

    mult_op = op.Multiply()
    dfda_fn = mult_op.gradfn(cg.Variable("a"))
    assert dfda_fn(jnp.array(1.0), jnp.array(2.0)).value == 2
    dfdb_fn = mult_op.gradfn(cg.Variable("b"))
    assert dfdb_fn(jnp.array(1.0), jnp.array(2.0)).value == 1

    square_op = op.Square()
    dfdx_fn = square_op.gradfn(cg.Variable("x"))
    assert dfdx_fn(jnp.array(2.0)).value == 4

    result = mult_op(jnp.array(3.0), jnp.array(4.0))
    assert result.value == 12
    num = result.grad(result.children[0])
    assert num == 4


def test_gradfn_of_tensors_is_the_jacobian_and_of_seed_style_operators_the_partial():
    x = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(
        op.Square().gradfn(cg.Variable("x"))(x).value, jacrev(jnp.square)(x)
    )  # what the original computed
    np.testing.assert_array_equal(op.Multiply().gradfn("b")(x, 2.0).value, jacrev(jnp.multiply, 1)(x, 2.0))

    class SeedMultiply(cg.Operator):  # the seed document's operator: _gradfn gives the local partial
        def __init__(self):
            super().__init__(inputs=(cg.Variable("a"), cg.Variable("b")))

        def call(self, a, b):
            return a.value * b.value

        def _gradfn(self, inpt):
            return (lambda a, b: b.value) if inpt.short_name == "a" else (lambda a, b: a.value)

    np.testing.assert_array_equal(SeedMultiply().gradfn(cg.Variable("a"))(x, 2 * x).value, 2 * x)
    with pytest.raises(cg.UnknownNameError, match="mult has no input named 'c'"):
        op.Multiply().gradfn(cg.Variable("c"))


def test_call_integrity_and_node_equality():
    m = MyTestModel1()
    result1 = m(jnp.array(3))
    result2 = m(jnp.array(3))
    assert isinstance(result1, cg.ModuleGraph)
    assert isinstance(result2, cg.ModuleGraph)

    all_nodes1 = cg.get_all_nodes(result1.root)
    for n1 in all_nodes1:
        for n2 in all_nodes1:
            assert n1.call_id == n2.call_id
    all_nodes2 = cg.get_all_nodes(result2.root)
    for n1 in all_nodes2:
        for n2 in all_nodes2:
            assert n1.call_id == n2.call_id
    assert len(all_nodes1) == 5 and all_nodes1 == set(result1.nodes)

    assert result1.call_id != result2.call_id
    assert result1.root.id != result2.root.id
    assert result1.value == result2.value
    assert result1 != result2
    assert result1.root != result2.root

    # equality: the same call, the same template, equal values
    for n1 in all_nodes1:
        n1cp = copy.copy(n1)
        assert n1cp == n1 and hash(n1cp) == hash(n1)
        for n2 in all_nodes2:
            assert n1 != n2  # another call: never equal, whatever the values
    twin = copy.copy(result1.root)
    twin.value = twin.value + 1
    assert twin != result1.root  # a different value
    assert len(cg.get_input_nodes(result1)) == 2  # x and w


def test_distinct_nodes_of_one_graph_stay_distinct():
    """x * x + x * x: two products of the same operator, inputs and value in one call
    are still two nodes (the original gave each application its own template): sets
    keep both and the gradient counts both."""

    class Twice(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),))

        def call(self, x):
            return op.add(op.mult(x, x), op.mult(x, x))

    m = Twice()
    result = m(3.0)
    products = [n for n in cg.get_all_nodes(result) if n.name == "mult"]
    assert len(products) == 2 and products[0] != products[1]
    result.back()
    assert result.grad(m.input("x")) == 12


def test_linear_from_initial_arrays():
    W0 = jnp.array([[1, -1, 5], [0, 14, -9]], dtype=jnp.float32)
    b0 = jnp.array([1, 4, -1], dtype=jnp.float32)
    linfn = fcn.Linear(W0, b0)
    x = jnp.array([1, -12], dtype=jnp.float32)
    y = linfn(x)
    assert (y.value == jnp.array([[2, -165, 112]])).all()
    assert linfn.input_dim == 2 and linfn.output_dim == 3
    y.back()
    np.testing.assert_array_equal(y.grad(linfn.param("W")), jacrev(lambda W: x @ W + b0)(W0))
    assert fcn.Linear(2, 3).param("W").shape == (2, 3)  # our way still works
    with pytest.raises(cg.ShapeError, match=r"b0 must be shaped \(3,\)"):
        fcn.Linear(W0, jnp.ones(2))
    with pytest.raises(TypeError, match="the second argument is the initial bias b0"):
        fcn.Linear(W0, 3)


def test_plot_with_a_save_path_without_extension(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = MyTestModel1()
    result = m(jnp.array(3))
    path = plot_cg(result.root, save_path="out/cg-simple", wait=2, title="test_visualize_cg (simple)")
    assert path == "out/cg-simple.png"
    assert (tmp_path / "out" / "cg-simple.png").read_bytes().startswith(b"\x89PNG")
    m = CompositeModel_WeightSharing_DifferentInputs()
    result = m(jnp.array(3), jnp.array(3))
    path = plot_cg(
        result.root,
        save_path=str(tmp_path / "cg-comp-YN"),
        wait=2,
        title="test_visualize_CompositeModel_WeightSharing_**Different**Inputs",
    )
    assert path == str(tmp_path / "cg-comp-YN.png") and os.path.getsize(path) > 1000


@pytest.mark.parametrize(
    "x",
    [
        jnp.array(3.0),
        jnp.array([3.0, 4.0, 5.0]),
        jnp.array([[3.0, 4.0, 5.0], [5.0, 8.0, 10.0], [3.0, 3.0, -7.0], [5.0, 4.0, 10.0]]),
    ],
    ids=["scalar", "vector", "matrix"],
)
def test_backward_against_jacrev(x):
    m = MyTestModel1()
    result = m(x)
    result.back()
    assert jnp.all(result.grad(m.input("x")) == jacrev(model1fun, argnums=0)(x, m.param("w").value))
    assert jnp.all(result.grad(m.param("w")) == jacrev(model1fun, argnums=1)(x, m.param("w").value))


def test_composite_model_gradient():
    cm3 = CompositeModel_WeightSharing_DifferentInputs()
    result = cm3(jnp.array(3.0), jnp.array(4.0))
    result.back()
    assert result.grad(cm3._m1.param("w")) == 9.0 + 16.0
    assert result.grad(cm3.input("x1")) == 3 * 9 + 2 * 2 * 3
