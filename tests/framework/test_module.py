"""Parameters cannot be missed: wherever a module keeps its submodules, their
parameters are trained and checkpointed, or the call says why not; names are
stable; state_dict round trips and refuses what does not fit. Deep nesting: 200
modules build, differentiate, save and draw; walking the tree never recurses; past
Python's recursion limit the error says how to go deeper."""

import re

import jax.numpy as jnp
import numpy as np
import pytest

from zkynet import losses, optim
from zkynet.framework import cg, op
from zkynet.framework.compile import TrainStep
from zkynet.framework.errors import NestingDepthError
from zkynet.models.fcn import MLP, Linear
from zkynet.models.layers import Activation
from zkynet.models.toy import SimpleModel
from zkynet.visual import plot_cg

rng = np.random.default_rng(0)
X = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
Y = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)


class Chain(cg.Module):
    """Applies whatever `modules(self)` lists, in order; subclasses say where they keep them."""

    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"),))

    def call(self, x):
        for module in self.modules():
            x = module(x)
        return x


class Appended(Chain):
    def __init__(self):
        super().__init__()
        self.layers = []
        self.layers.append(Linear(2, 2, key=1))  # appended after the assignment
        self.layers.append(Activation("tanh"))
        self.layers.append(Linear(2, 2, key=2))

    def modules(self):
        return self.layers


class InADict(Chain):
    def __init__(self):
        super().__init__()
        self.heads = {"a": Linear(2, 2, key=1), "b": Linear(2, 2, key=2)}

    def modules(self):
        return [self.heads["a"], self.heads["b"]]


class Nested(Chain):
    def __init__(self):
        super().__init__()
        self.blocks = [[Linear(2, 2, key=1), Activation("relu"), Linear(2, 2, key=2)], [Linear(2, 2, key=3)]]

    def modules(self):
        return [m for block in self.blocks for m in block]


class InATuple(Chain):
    def __init__(self):
        super().__init__()
        self.pair = (Linear(2, 2, key=1), Linear(2, 2, key=2))

    def modules(self):
        return self.pair


def layer_names(*prefixes):
    return {f"{p}/{w}" for p in prefixes for w in ("W", "b")}


@pytest.mark.parametrize(
    "model, names",
    [
        (Appended, layer_names("layers.0", "layers.1")),
        (InADict, layer_names("heads.a", "heads.b")),
        (Nested, layer_names("blocks.0.0", "blocks.0.1", "blocks.1.0")),
        (InATuple, layer_names("pair.0", "pair.1")),
    ],
)
def test_submodules_in_containers_are_trained_and_checkpointed(model, names):
    model = model()
    assert set(model.named_parameters()) == names
    before = {n: np.asarray(p.value) for n, p in model.named_parameters().items()}
    step = TrainStep(model, losses.mse, optim.SGD(0.5))
    step(X, Y)
    checkpoint = step.state_dict()["params"]
    assert set(checkpoint) == names
    for name, p in model.named_parameters().items():
        assert not np.allclose(before[name], p.value), f"{name} was not trained"
        np.testing.assert_array_equal(checkpoint[name], p.value)


def test_colliding_attribute_names_are_refused():
    class Collides(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),))
            self._m1 = SimpleModel()
            self.m1 = SimpleModel()

        def call(self, x):
            return self._m1(x) + self.m1(x)

    model = Collides()
    with pytest.raises(cg.NameCollisionError, match="attributes '_m1' and 'm1' both hold modules named 'm1'"):
        model.named_parameters()
    with pytest.raises(cg.NameCollisionError, match="'_m1' and 'm1'"):
        model(3.0)


class Holder:
    """Not a module, not a list: what it holds stays invisible."""

    def __init__(self, module):
        self.module = module


class InASet(Chain):
    def __init__(self):
        super().__init__()
        self.layers = {Linear(2, 2, key=1)}

    def modules(self):
        return list(self.layers)


class InAnObject(Chain):
    def __init__(self):
        super().__init__()
        self.holder = Holder(Linear(2, 2, key=1))

    def modules(self):
        return [self.holder.module]


@pytest.mark.parametrize("model", [InASet, InAnObject])
def test_hidden_submodules_are_refused_with_what_to_do(model):
    model = model()
    assert model.named_parameters() == {}
    name = model.functional_name
    with pytest.raises(
        cg.UnregisteredParameterError,
        match=(
            rf"{name} used parameters that are not in its named_parameters\(\).*"
            rf"parameter 'W' used at {name}/Linear/W; "
            rf"parameter 'b' used at {name}/Linear/b\. .*a list, tuple or dict"
        ),
    ):
        model(X)
    with pytest.raises(
        cg.UnregisteredParameterError,  # compiled: refused while tracing the step
        match=rf"parameter 'W' used at {name}\+loss/model/Linear/W",
    ):
        TrainStep(model, losses.mse, optim.SGD(0.5))(X, Y)


def test_a_scan_cell_with_a_hidden_parameter_is_refused():
    class Cell(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"), cg.Variable("h")))
            self.hidden = Holder(Linear(2, 2))

        def call(self, x, h):
            return op.tanh(x + self.hidden.module(h))

    with pytest.raises(cg.UnregisteredParameterError, match="parameter 'W' used at Cell/Linear/W"):
        op.scan(Cell(), [jnp.zeros((1, 2))], [jnp.ones((3, 1, 2))])


def test_a_parameter_passed_as_an_argument_is_an_input_not_an_error():
    class Scale(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"), cg.Variable("w")))

        def call(self, x, w):
            return op.sum(x * w)

    w = cg.Parameter("w", jnp.array([2.0, 3.0]))
    result = Scale()(jnp.array([5.0, 7.0]), w)
    result.back()
    np.testing.assert_allclose(result.grad(w), [5.0, 7.0])


def test_the_check_runs_while_tracing_not_per_compiled_step(monkeypatch):
    model = Appended()
    step = TrainStep(model, losses.mse, optim.SGD(0.1))
    step(X, Y)
    walks = []
    original = cg.Module.named_parameters
    monkeypatch.setattr(cg.Module, "named_parameters", lambda self: walks.append(self) or original(self))
    step(X, Y)
    step(X, Y)
    assert walks == []
    model(X)  # an eager call checks, once per call
    assert walks


def test_names_do_not_shift_with_parameterless_layers():
    plain = MLP([4, 8, 8, 2], key=0)
    dropped = MLP([4, 8, 8, 2], dropout=0.5, key=0)
    names = layer_names("layers.0", "layers.1", "layers.2")
    assert set(plain.named_parameters()) == set(dropped.named_parameters()) == names
    paths = {n.path for n in dropped(jnp.ones((1, 4)), rng=0).nodes}
    assert {"MLP/layers.1/W", "MLP/relu#2/relu", "MLP/Dropout#2/dropout", "MLP/layers.2/matmul"} <= paths
    plain.load_state_dict(dropped.state_dict())  # a checkpoint moves between the two
    x = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    np.testing.assert_array_equal(plain(x).value, dropped(x).value)  # no rng: dropout is off


def test_state_dict_round_trip_copies_values():
    source, target = MLP([2, 4, 2], key=1), MLP([2, 4, 2], key=2)
    state = source.state_dict()
    target.load_state_dict(state)
    np.testing.assert_array_equal(target(X).value, source(X).value)
    kept = {n: np.array(v, copy=True) for n, v in state.items()}  # a view would block donation
    for model in (source, target):  # compiled steps donate the parameters' buffers ...
        step = TrainStep(model, losses.mse, optim.SGD(0.5))
        step(X, Y)
        step(X, Y)
    for name, value in state.items():  # ... never the state's own copies
        np.testing.assert_array_equal(np.asarray(value), kept[name])
        assert not np.array_equal(np.asarray(target.named_parameters()[name].value), kept[name])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("layers.1/b"), r"lacks \['layers.1/b'\] and has unexpected nothing"),
        (lambda s: s.update(extra=jnp.ones(2)), r"lacks nothing and has unexpected \['extra'\]"),
        (
            lambda s: s.update({"layers.0/W": jnp.ones((3, 4))}),
            r"'layers.0/W' is shaped \(2, 4\), the state's value \(3, 4\)",
        ),
        (
            lambda s: s.update({"layers.0/b": jnp.ones(4, jnp.int32)}),
            r"'layers.0/b' is float32, the state's value int32",
        ),
    ],
)
def test_load_state_dict_refuses_what_does_not_fit_and_changes_nothing(change, message):
    model = MLP([2, 4, 2], key=1)
    before = {n: np.asarray(p.value) for n, p in model.named_parameters().items()}
    state = MLP([2, 4, 2], key=2).state_dict()
    change(state)
    with pytest.raises(cg.StateDictError, match=rf"MLP.load_state_dict: .*{message}"):
        model.load_state_dict(state)
    for name, p in model.named_parameters().items():
        np.testing.assert_array_equal(p.value, before[name])


def test_a_parameter_keeps_its_shape_but_may_change_dtype():
    w = Linear(2, 3).param("W")
    with pytest.raises(cg.ShapeError, match=r"parameter 'W' is shaped \(2, 3\); .* got \(3, 2\)"):
        w.value = jnp.ones((3, 2))
    assert w.value.shape == (2, 3)
    w.value = w.value.astype(jnp.bfloat16)
    assert w.value.dtype == jnp.bfloat16
    w.value = np.zeros((2, 3))
    np.testing.assert_array_equal(w.value, 0)


def test_shared_submodules_and_parameters_are_listed_once():
    shared = Linear(2, 2)

    class Twice(Chain):
        def __init__(self):
            super().__init__()
            self.first, self.again = shared, [shared]

        def modules(self):
            return [self.first, self.again[0]]

    model = Twice()
    assert set(model.named_parameters()) == layer_names("first")
    graph = model(X)
    assert {"Twice/first/matmul", "Twice/first#2/matmul"} <= {n.path for n in graph.nodes}


# ----------------------------------------------------------------------------- hostile: deep nesting


class Leaf(cg.Module):
    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"),), params=(cg.Parameter("w", 2.0),))

    def call(self, x):
        return x * self.param("w")


class Wrap(cg.Module):
    def __init__(self, inner):
        super().__init__(inputs=(cg.Variable("x"),))
        self.inner = inner

    def call(self, x):
        return self.inner(x) + 1.0


def nested(depth, wrap=Wrap):
    m = Leaf()
    for _ in range(depth):
        m = wrap(m)
    return m


def test_200_nested_modules_build_differentiate_save_and_draw(tmp_path):
    m = nested(200)
    result = m(3.0)
    assert float(result.value) == 6.0 + 200
    result.back()
    assert float(result.grad(m.input("x"))) == 2.0
    ((name, w),) = m.named_parameters().items()
    assert name == "inner/" * 200 + "w" and float(result.grad(w)) == 3.0
    m.load_state_dict(m.state_dict())
    deepest = next(n for n in result.nodes if isinstance(n, cg.ParameterNode))
    assert deepest.path.count("/") == 201 and deepest.path.startswith("Wrap/inner/inner")
    step = TrainStep(m, losses.mse, optim.SGD(0.1))  # compiled too
    assert np.isfinite(step(jnp.array(1.0), jnp.array(0.0))["loss"])
    assert plot_cg(result, save_path=str(tmp_path / "deep.png")).endswith("deep.png")


def test_200_nested_lists_of_modules():
    from zkynet.models.layers import Sequential

    def wrap(inner):
        return Sequential([inner])

    m = nested(200, wrap)
    assert float(m(1.0).value) == 2.0
    assert list(m.named_parameters()) == ["layers.0/" * 200 + "w"]


@pytest.mark.parametrize("wrap", ["attribute", "list"])
def test_walking_submodules_never_recurses(wrap):
    """Listing, saving and loading parameters loop over the module tree: 1500 levels
    (past the recursion limit) work; only the call itself needs the stack."""
    from zkynet.models.layers import Sequential

    m = nested(1500, Wrap if wrap == "attribute" else lambda inner: Sequential([inner]))
    ((name, w),) = m.named_parameters().items()
    assert name.count("/") == 1500 and name.endswith("/w")
    state = m.state_dict()
    m.load_state_dict({name: state[name] * 2})
    assert float(w.value) == 4.0 and list(m.children) == (["inner"] if wrap == "attribute" else ["layers.0"])


def test_nesting_past_the_recursion_limit_says_how_to_go_deeper():
    with pytest.raises(NestingDepthError) as error:
        nested(1000)(1.0)
    message = str(error.value)
    assert re.search(
        r"Wrap: Python's recursion limit \(\d+\) was reached while building the graph, with "
        r"module calls nested \d+ deep",
        message,
    )
    assert "sys.setrecursionlimit(" in message and "flatten it" in message
    assert isinstance(error.value, RecursionError)
