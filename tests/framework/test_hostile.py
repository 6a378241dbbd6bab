"""A hostile user's battery: each attempt that used to give a silently wrong number
(or hang, or fail deep inside JAX) now gives the right value or a specific zkynet
error whose message names the operator or place, the bad value and what to do.

Items: (1) integer indexing out of range, (2) op.take out of range, (3) bad labels
for softmax cross-entropy, (4) custom operators whose vjp returns the wrong number
or shapes of cotangents, (5) Python ints that overflow, (6) deep module nesting,
(7) plot_cg on graphs dot cannot lay out quickly, and save paths."""

import re
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet import losses, optim
from zkynet.framework import cg, op
from zkynet.framework.compile import TrainStep
from zkynet.framework.errors import (
    BackwardRuleError,
    IndexOutOfRangeError,
    LabelError,
    NestingDepthError,
    NumericOverflowError,
    PlotError,
    ValueTypeError,
)
from zkynet.models.toy import SimpleModel
from zkynet.visual import plot_cg


class Fn(cg.Module):
    """A one-input module applying `fn` (so nodes get a path and back() can run)."""

    def __init__(self, fn, name="Fn"):
        super().__init__(inputs=(cg.Variable("x"),), name=name)
        self.fn = fn

    def call(self, x):
        return self.fn(x)


def value_and_grad(fn, x):
    m = Fn(fn)
    result = m(x)
    result.back()
    return result.value, result.grad(m.input("x"))


# ----------------------------------------------------------------------------- (1) x[i]

X3 = jnp.array([10.0, 20.0, 30.0])
M23 = jnp.arange(6.0).reshape(2, 3)

OUT_OF_RANGE_KEYS = [  # (array, key, the axis and size the message must name, the bad index)
    (X3, 7, "axis 0 of size 3", "7"),
    (X3, 3, "axis 0 of size 3", "3"),
    (X3, -4, "axis 0 of size 3", "-4"),
    (M23, (1, 3), "axis 1 of size 3", "3"),
    (M23, (2, 0), "axis 0 of size 2", "2"),
    (M23, (Ellipsis, -4), "axis 1 of size 3", "-4"),
    (M23, (None, 0, 5), "axis 1 of size 3", "5"),
    (M23, (slice(None), np.array([0, 3])), "axis 1 of size 3", "3"),
    (X3, [0, 1, 9], "axis 0 of size 3", "9"),
    (X3, jnp.array([2, -5]), "axis 0 of size 3", "-5"),
    (X3, 2**40, "axis 0 of size 3", "1099511627776"),  # beyond int32, where positions are kept
    (M23, (0, -(2**33)), "axis 1 of size 3", "-8589934592"),
]


@pytest.mark.parametrize("x, key, axis, bad", OUT_OF_RANGE_KEYS, ids=[str(k) for _, k, _, _ in OUT_OF_RANGE_KEYS])
def test_integer_index_out_of_range_is_refused(x, key, axis, bad):
    with pytest.raises(IndexOutOfRangeError) as error:
        value_and_grad(lambda v: op.sum(v[key]), x)
    message = str(error.value)
    assert message.startswith("Fn/getitem:") and axis in message and f" {bad} " in message
    assert "valid indices are" in message and isinstance(error.value, IndexError)


def test_too_many_indices_are_refused():
    with pytest.raises(
        IndexOutOfRangeError,
        match=r"getitem: the key \(0, 1\) indexes 2 axes of an input "
        r"with 1 \(float32\[3\]\)",
    ):
        op.getitem(X3, (0, 1))


@pytest.mark.parametrize(
    "key, value, grad",
    [
        (-1, 30.0, [0, 0, 1]),
        (-3, 10.0, [1, 0, 0]),
        (2, 30.0, [0, 0, 1]),
        (slice(1, 10), 50.0, [0, 1, 1]),  # slices keep Python's semantics: they stop at the end
        (slice(-10, 1), 10.0, [1, 0, 0]),
        ([-1, -1], 60.0, [0, 0, 2]),  # repeats accumulate
    ],
)
def test_in_range_indices_and_slices_give_the_right_value_and_gradient(key, value, grad):
    result, gradient = value_and_grad(lambda v: op.sum(v[key]), X3)
    assert float(result) == value
    np.testing.assert_array_equal(gradient, grad)


@pytest.mark.parametrize("mask", [jnp.array([True, False, True]), np.array([False, True, True])], ids=["jnp", "np"])
def test_boolean_masks_are_not_mistaken_for_indices(mask):
    result, gradient = value_and_grad(lambda v: op.sum(v[mask]), X3)
    assert float(result) == float(X3[mask].sum())
    np.testing.assert_array_equal(gradient, np.asarray(mask, float))


def test_python_int_indices_are_checked_under_jit_too():
    with pytest.raises(IndexOutOfRangeError, match="index 7 is out of range"):
        jax.jit(lambda x: op.getitem(x, 7).value)(X3)


def test_traced_index_arrays_read_nan_and_get_no_gradient():
    """Traced indices cannot be checked: out of range they read NaN (never a clamped
    element) and send no gradient anywhere."""

    def f(x, i):
        m = Fn(lambda v: op.sum(v[i]))
        result = m(x)
        result.back()
        return result.value, result.grad(m.input("x"))

    value, grad = jax.jit(f)(X3, jnp.array([0, 7]))
    assert np.isnan(value)
    np.testing.assert_array_equal(grad, [1, 0, 0])
    value, grad = jax.jit(f)(X3, jnp.array([0, -1]))  # in range, negative: the last element
    assert float(value) == 40.0
    np.testing.assert_array_equal(grad, [1, 0, 1])


# ----------------------------------------------------------------------------- (2) op.take


@pytest.mark.parametrize(
    "indices, axis, message",
    [
        (jnp.array([0, 3]), 0, "index 3 .*out of range for axis 0 of size 2"),
        (np.array([[1], [-3]]), 0, r"index -3 \(at \[1, 0\] of the indices\) is out of range for axis 0 of size 2"),
        (jnp.array([6]), None, "index 6 .*out of range for axis 0 of the flattened input of size 6"),
        (jnp.array([0, 5]), -1, "index 5 .*out of range for axis 1 of size 3"),
    ],
)
def test_take_out_of_range_is_refused(indices, axis, message):
    with pytest.raises(IndexOutOfRangeError, match=message):
        value_and_grad(lambda v: op.sum(op.take(v, indices, axis)), M23)


def test_take_refuses_float_indices_and_bad_axes():
    with pytest.raises(ValueTypeError, match=r"take: indices must be integers, got float32\[2\]"):
        op.take(M23, jnp.array([0.0, 1.0]))
    with pytest.raises(cg.ShapeError, match=r"take: axis 2 is out of range for the input float32\[2, 3\]"):
        op.take(M23, jnp.array([0]), axis=2)


def test_take_negative_indices_count_from_the_end():
    value, grad = value_and_grad(lambda v: op.sum(op.take(v, jnp.array([-1, -1]), axis=0)), M23)
    assert float(value) == 2 * (3 + 4 + 5)
    np.testing.assert_array_equal(grad, [[0, 0, 0], [2, 2, 2]])


def test_an_embedding_lookup_of_a_token_beyond_the_vocabulary():
    from zkynet.models.layers import Embedding

    with pytest.raises(IndexOutOfRangeError, match=r"Embedding/take: index 16 .*axis 0 of size 16"):
        Embedding(16, 4)(jnp.array([[1, 16]]))
    looked_up = jax.jit(lambda t: Embedding(16, 4)(t).value)(jnp.array([[1, 16]]))  # traced: NaN row
    assert np.isfinite(looked_up[0, 0]).all() and np.isnan(looked_up[0, 1]).all()


# ----------------------------------------------------------------------------- (3) labels

LOGITS = jnp.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 1.0, -1.0]])


@pytest.mark.parametrize(
    "labels, message",
    [
        (
            jnp.array([0, 1, 4]),
            r"label 4 at \[2\] is not a class: the logits have 4 classes, so labels must be in "
            r"0\.\.3, or -1 \(IGNORE\)",
        ),
        (jnp.array([0, 9, 1]), r"label 9 at \[1\]"),
        (jnp.array([0, -2, 1]), r"label -2 at \[1\] is not a class"),
        (np.array([0, 1, -7]), r"label -7 at \[2\]"),
        (jnp.array([0.0, 1.0, 2.0]), r"labels must be integer class indices, got float32; cast them"),
        (np.array([True, False, True]), r"labels must be integer class indices, got bool"),
        (jnp.array([0, 1]), r"labels shaped \(2,\) do not fit logits shaped \(3, 4\): expected .* shaped \(3,\)"),
        (jnp.array([[0], [1], [2]]), r"labels shaped \(3, 1\) do not fit"),
        (jnp.array([-1, -1, -1]), r"every label of this batch is IGNORE"),
    ],
)
def test_bad_labels_are_refused(labels, message):
    with pytest.raises(LabelError, match=message):
        losses.softmax_cross_entropy(LOGITS, labels)


def test_an_empty_batch_is_refused_not_minus_zero():
    with pytest.raises(LabelError, match=r"empty batch \(logits shaped \(0, 4\)\)"):
        losses.softmax_cross_entropy(jnp.zeros((0, 4)), jnp.zeros((0,), jnp.int32))
    with pytest.raises(LabelError, match="empty batch"):  # known while tracing: refused under jit too
        jax.jit(lambda z, y: losses.softmax_cross_entropy(z, y).value)(jnp.zeros((0, 4)), jnp.zeros((0,), int))


def test_ignored_labels_count_for_nothing():
    mixed = losses.softmax_cross_entropy(LOGITS, jnp.array([0, -1, 2])).value
    only = losses.softmax_cross_entropy(LOGITS[jnp.array([0, 2])], jnp.array([0, 2])).value
    np.testing.assert_allclose(mixed, only, rtol=1e-6)


def test_traced_bad_labels_make_the_loss_and_gradients_nan():
    """Under jit the labels are data: a bad one poisons the step (loss and gradients
    NaN), which the NaN guard stops, instead of training on a silently wrong loss."""
    from zkynet.models.fcn import MLP

    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    step = TrainStep(MLP([4, 4], key=0), losses.softmax_cross_entropy, optim.SGD(0.1))
    assert np.isfinite(step(x, jnp.array([0, 1, 3]))["loss"])
    assert np.isnan(step(x, jnp.array([0, 1, 4]))["loss"])
    assert all(np.isnan(p.value).all() for p in step.model.named_parameters().values())
    eager = TrainStep(MLP([4, 4], key=0), losses.softmax_cross_entropy, optim.SGD(0.1), jit=False)
    with pytest.raises(LabelError, match="label 4 at"):  # run eagerly, the same batch names the label
        eager(x, jnp.array([0, 1, 4]))


# ----------------------------------------------------------------------------- (4) custom vjp


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


# ----------------------------------------------------------------------------- (5) Python ints


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


# ----------------------------------------------------------------------------- (6) deep nesting


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


# ----------------------------------------------------------------------------- (7) plot_cg


class SharedChain(cg.Module):
    """A chain whose every step uses the same parameter: what took dot 480 s."""

    def __init__(self, steps, shared=1):
        super().__init__(inputs=(cg.Variable("x"),), params=tuple(cg.Parameter(f"w{i}", 0.5) for i in range(shared)))
        self.steps, self.shared = steps, shared

    def call(self, x):
        for i in range(self.steps):
            x = op.tanh(x * self.param(f"w{i % self.shared}"))
        return x


@pytest.mark.parametrize("steps, shared", [(150, 1), (150, 2)])
def test_a_big_shared_parameter_graph_is_collapsed_quickly_and_says_so(tmp_path, steps, shared):
    graph = SharedChain(steps, shared)(1.0)
    assert len(graph.nodes) > 300
    start = time.perf_counter()
    with pytest.warns(
        UserWarning,
        match=r"depth=None takes \d+ shapes, more than max_nodes=150.*collapsed to "
        r"depth=0",
    ):
        path = plot_cg(graph, save_path=str(tmp_path / "big.png"), depth=None)
    assert time.perf_counter() - start < 10
    assert Path(path).read_bytes().startswith(b"\x89PNG")


def test_long_edges_count_too_not_only_nodes(tmp_path):
    """74 steps sharing one parameter: 150 shapes (under max_nodes), but each use of the
    parameter is an edge spanning up to 150 ranks; laying that out is what is slow."""
    with pytest.warns(UserWarning, match=r"edges span many ranks .*about \d+ units of layout work"):
        plot_cg(SharedChain(74)(1.0), save_path=str(tmp_path / "long.svg"), depth=None)


def test_nodes_outside_any_module_cannot_collapse_so_it_refuses(tmp_path):
    x = jnp.ones(2)
    for _ in range(200):
        x = op.tanh(x)
    with pytest.raises(
        PlotError,
        match=r"201 shapes, more than max_nodes=150, and 201 of its nodes were made "
        r"outside any module call.*Build the computation inside a cg.Module",
    ):
        plot_cg(x, save_path=str(tmp_path / "free.png"))


def test_dot_is_stopped_at_the_timeout(tmp_path):
    with pytest.raises(PlotError, match=r"dot did not finish drawing \d+ nodes within 0.01 s.*depth=1"):
        plot_cg(SharedChain(60, 2)(1.0), save_path=str(tmp_path / "slow.png"), depth=None, max_nodes=None, timeout=0.01)


def test_save_paths(tmp_path):
    graph = SimpleModel()(3)
    folder = tmp_path / "pictures"
    folder.mkdir()
    assert plot_cg(graph, save_path=str(folder), title="f(x)") == str(folder / "f_x.png")  # inside the folder
    assert plot_cg(graph, save_path=str(tmp_path / "new") + "/") == str(
        tmp_path / "new" / f"cg-call-{graph.call_id}.png"
    )
    assert plot_cg(graph, save_path=str(tmp_path / "out" / "cg-simple")) == str(tmp_path / "out" / "cg-simple.png")
    assert plot_cg(graph, save_path=str(tmp_path / "cg.v2")) == str(tmp_path / "cg.v2.png")  # not a format
    assert plot_cg(graph, save_path=tmp_path / "g.svg").endswith("g.svg")  # a pathlib.Path
    for name in ["f_x.png"]:
        assert (folder / name).read_bytes().startswith(b"\x89PNG")
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(PlotError, match=re.escape("taken.png' is a directory")):
        plot_cg(graph, save_path=str(tmp_path / "taken"))
    with pytest.raises(PlotError, match="unknown format 'jpeg2'"):
        plot_cg(graph, save_path=str(tmp_path / "g"), format="jpeg2")
    with pytest.raises(PlotError, match="depth must be None, 'auto' or an int"):
        plot_cg(graph, save_path=str(tmp_path / "g.png"), depth=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # small graphs draw as asked, silently
        plot_cg(graph, save_path=str(tmp_path / "g.png"), depth=None)
