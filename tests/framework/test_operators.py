"""Every built-in operator's forward and hand-written backward, against JAX
(jax.vjp, jax.jacrev) and finite differences, on random shapes with broadcasting.

Random examples find what nobody thought of; they cannot be relied on to find a
given mistake. So each property test also runs fixed cases (@example, and the
targeted tests below) chosen to break plausible wrong rules deterministically:
permutations that are not their own inverse (3-cycles) on shapes whose sides all
differ and on square ones, every binary operator broadcasting each way (size-1
axes stretched on both sides, missing leading axes, scalars), reductions over
interior axes with and without keepdims."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, basic_indices, broadcastable_shapes, mutually_broadcastable_shapes
from jax import lax

from zkynet.framework import cg, op
from zkynet.framework.ops.convolution import _padding, _pair
from zkynet.gradcheck import broadcasting_shapes, check_gradients, check_operator

# Every new shape costs XLA compilations of each eager primitive (~30 ms each), so
# shapes stay small: sides up to 3 and 3-4 dims still cover every broadcasting case.
examples = settings(max_examples=8, deadline=None)
seeds = st.integers(0, 2**32 - 1)
shapes = array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)
pairs = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=3)


def normal(rng, shape):
    return rng.normal(size=shape)


def _Broadcast(input_shapes, result_shape):  # what mutually_broadcastable_shapes draws, for @example
    from hypothesis.extra.numpy import BroadcastableShapes

    return BroadcastableShapes(input_shapes=input_shapes, result_shape=result_shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, size=shape)


UNARY = {
    "neg": (op.neg, jnp.negative, normal),
    "square": (op.square, jnp.square, normal),
    "sqrt": (op.sqrt, jnp.sqrt, positive),
    "exp": (op.exp, jnp.exp, normal),
    "log": (op.log, jnp.log, positive),
    "abs": (op.abs, jnp.abs, normal),
    "tanh": (op.tanh, jnp.tanh, normal),
    "sigmoid": (op.sigmoid, jax.nn.sigmoid, normal),
    "softplus": (op.softplus, jax.nn.softplus, lambda rng, shape: 5 * rng.normal(size=shape)),
    "relu": (op.relu, jax.nn.relu, normal),
    "leaky_relu": (lambda x: op.leaky_relu(x, 0.2), lambda x: jax.nn.leaky_relu(x, 0.2), normal),
    "gelu": (op.gelu, lambda x: jax.nn.gelu(x, approximate=False), normal),
    "gelu_tanh": (lambda x: op.gelu(x, approximate=True), lambda x: jax.nn.gelu(x, approximate=True), normal),
}


@pytest.mark.parametrize("name", UNARY)
@examples
@given(shape=shapes, seed=seeds)
def test_unary(name, shape, seed):
    fn, reference, sample = UNARY[name]
    check_gradients(fn, reference, [sample(np.random.default_rng(seed), shape)], seed)


BINARY = {
    "add": (op.add, jnp.add, normal, normal),
    "sub": (op.sub, jnp.subtract, normal, normal),
    "mult": (op.mult, jnp.multiply, normal, normal),
    "div": (op.div, jnp.divide, normal, positive),
    "pow": (op.pow, jnp.power, positive, normal),
    "maximum": (op.maximum, jnp.maximum, normal, normal),
    "minimum": (op.minimum, jnp.minimum, normal, normal),
}


@pytest.mark.parametrize("name", BINARY)
@examples
@given(shapes=pairs, seed=seeds)
def test_binary_broadcasting(name, shapes, seed):
    fn, reference, sample_a, sample_b = BINARY[name]
    rng = np.random.default_rng(seed)
    a_shape, b_shape = shapes.input_shapes
    check_gradients(fn, reference, [sample_a(rng, a_shape), sample_b(rng, b_shape)], seed)


BROADCASTS = [  # each way a binary operator's backward must undo broadcasting
    ((2, 1, 3), (4, 1)),  # size-1 axes stretched on both sides, a missing leading axis
    ((4, 1), (2, 1, 3)),  # the same, the other way round
    ((), (2, 3)),  # a scalar against a matrix
    ((2, 3), ()),
    ((1, 3), (2, 1)),  # an outer product
    ((3,), (2, 3)),
]


@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
@pytest.mark.parametrize("name", BINARY)
def test_binary_broadcasting_each_way(name, shapes):
    fn, reference, sample_a, sample_b = BINARY[name]
    rng = np.random.default_rng(0)
    check_gradients(fn, reference, [sample_a(rng, shapes[0]), sample_b(rng, shapes[1])], seed=1)


def test_binary_operator_as_a_user_checks_it():
    """The public checker's own random broadcasting trials, on the operator classes."""
    assert len(broadcasting_shapes(2)) == 3
    check_operator(op.Mult(), jnp.multiply)
    check_operator(op.Div(), jnp.divide, sample=[lambda r, s: r.normal(size=s), lambda r, s: r.uniform(1, 2, s)])


@examples
@given(shapes=mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seed=seeds)
@example(shapes=_Broadcast(((2, 1, 1), (1, 3, 1), (4,)), (2, 3, 4)), seed=0)  # each input stretched
@example(shapes=_Broadcast(((3, 1), (), (1, 2)), (3, 2)), seed=1)
def test_where(shapes, seed):
    rng = np.random.default_rng(seed)
    c_shape, a_shape, b_shape = shapes.input_shapes
    condition = rng.uniform(size=c_shape) > 0.5
    check_gradients(
        lambda a, b: op.where(condition, a, b),
        lambda a, b: jnp.where(condition, a, b),
        [rng.normal(size=a_shape), rng.normal(size=b_shape)],
        seed,
    )


@st.composite
def shape_and_axis(draw, min_dims=0, single=False):
    shape = draw(array_shapes(min_dims=max(min_dims, 1 if single else 0), max_dims=3, max_side=3))
    if single:
        return shape, draw(st.integers(-len(shape), len(shape) - 1))
    axes = draw(
        st.none() | st.lists(st.integers(0, len(shape) - 1), unique=True, max_size=len(shape)) if shape else st.none()
    )
    if axes is not None and len(axes) == 1 and draw(st.booleans()):
        axes = axes[0] - len(shape) if draw(st.booleans()) else axes[0]  # plain / negative int
    return shape, (tuple(axes) if isinstance(axes, list) else axes)


REDUCTIONS = {
    "sum": (op.sum, jnp.sum),
    "mean": (op.mean, jnp.mean),
    "max": (op.max, jnp.max),
    "logsumexp": (op.logsumexp, jax.scipy.special.logsumexp),
}


@pytest.mark.parametrize("name", REDUCTIONS)
@examples
@given(case=shape_and_axis(), keepdims=st.booleans(), seed=seeds)
@example(case=((2, 3, 4), 1), keepdims=False, seed=0)  # an interior axis
@example(case=((2, 3, 4), (0, 2)), keepdims=True, seed=1)
@example(case=((2, 3, 4), -1), keepdims=False, seed=2)
def test_reductions(name, case, keepdims, seed):
    fn, reference = REDUCTIONS[name]
    shape, axis = case
    if name == "max" and axis == ():
        axis = None  # jnp.max over no axes is the identity; nothing to test beyond sum's case
    check_gradients(
        lambda x: fn(x, axis=axis, keepdims=keepdims),
        lambda x: reference(x, axis=axis, keepdims=keepdims),
        [np.random.default_rng(seed).normal(size=shape)],
        seed,
    )


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@examples
@given(case=shape_and_axis(single=True), seed=seeds)
@example(case=((2, 3, 4), 1), seed=0)  # an interior axis
def test_softmax(name, case, seed):
    shape, axis = case
    fn, reference = getattr(op, name), getattr(jax.nn, name)
    check_gradients(
        lambda x: fn(x, axis=axis),
        lambda x: reference(x, axis=axis),
        [3 * np.random.default_rng(seed).normal(size=shape)],
        seed,
    )


def _layer_norm_reference(eps):
    def reference(x):
        centered = x - jnp.mean(x, axis=-1, keepdims=True)
        return centered / jnp.sqrt(jnp.mean(centered**2, axis=-1, keepdims=True) + eps)

    return reference


@examples
@given(shape=array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4), eps=st.sampled_from([1e-5, 0.1]), seed=seeds)
@example(shape=(2, 3, 5), eps=1e-5, seed=0)  # batch and time dims over a feature axis
@example(shape=(5,), eps=1e-5, seed=1)
@example(shape=(3, 1), eps=0.1, seed=2)  # one feature: the output is 0, its gradient too
def test_layer_norm(shape, eps, seed):
    check_gradients(
        lambda x: op.layer_norm(x, eps),
        _layer_norm_reference(eps),
        [np.random.default_rng(seed).normal(size=shape) * 2 + 1],
        seed,
    )


@pytest.mark.parametrize("shape", [(2, 3, 4), (4,)], ids=str)
def test_layer_norm_module_with_broadcast_scale_and_shift(shape):
    """zkynet.models.layers.LayerNorm: the operator, then (dim,) parameters broadcast
    over the batch dims; gradients for the input and both parameters."""
    from zkynet.models.layers import LayerNorm

    module = LayerNorm(shape[-1])
    rng = np.random.default_rng(1)
    module.param("scale").value = rng.normal(size=shape[-1]).astype(np.float32)
    module.param("shift").value = rng.normal(size=shape[-1]).astype(np.float32)

    def reference(params, x):
        return _layer_norm_reference(module.eps)(x) * params["scale"] + params["shift"]

    report = check_gradients(module, reference, [rng.normal(size=shape)], seed=1)
    assert report.inputs == ["x", "param 'scale'", "param 'shift'"]


class _Cell(cg.Module):
    """A two-carry cell with broadcasting inside: (x_t, h, c) -> (h', c')."""

    def __init__(self, width, rng):
        super().__init__(
            inputs=(cg.Variable("x"), cg.Variable("h"), cg.Variable("c")),
            params=(
                cg.Parameter("U", rng.normal(size=(width, width)).astype(np.float32) * 0.5),
                cg.Parameter("b", rng.normal(size=(width,)).astype(np.float32)),
            ),
        )

    def call(self, x, h, c):
        c = op.tanh(c * op.sigmoid(x) + h @ self.param("U"))
        return op.tanh(c + self.param("b")) * h + x, c


def _cell_reference(params, x, h, c):
    c = jnp.tanh(c * jax.nn.sigmoid(x) + h @ params["U"])
    return jnp.tanh(c + params["b"]) * h + x, c


class _Scanned(cg.Module):
    def __init__(self, cell):
        super().__init__(inputs=(cg.Variable("xs"), cg.Variable("h0"), cg.Variable("c0")))
        self.cell = cell

    def call(self, xs, h0, c0):
        return op.scan(self.cell, [h0, c0], [xs])


def _scan_reference(params, xs, h0, c0):
    def step(carry, x):
        new = _cell_reference({k.split("/")[-1]: v for k, v in params.items()}, x, *carry)
        return new, jnp.concatenate(new, axis=-1)

    return jax.lax.scan(step, (h0, c0), xs)[1]


@pytest.mark.parametrize("steps, batch", [(3, (2,)), (1, ()), (4, (2, 1))], ids=str)
def test_scan_against_jax_and_finite_differences(steps, batch):
    """op.scan's backward (a reverse scan of zkynet's own back()): gradients of the
    stacked outputs wrt the sequence, both initial carries and the cell's parameters,
    with batch dims (the initial carry broadcast against them where its dim is 1)."""
    width, rng = 3, np.random.default_rng(steps)
    scanned = _Scanned(_Cell(width, rng))
    xs = rng.normal(size=(steps,) + batch + (width,))
    h0 = rng.normal(size=batch + (width,))
    c0 = rng.normal(size=batch + (width,))
    report = check_gradients(scanned, _scan_reference, [xs, h0, c0], seed=steps)
    assert report.inputs == ["xs", "h0", "c0", "param 'cell/U'", "param 'cell/b'"]


class _SharingCell(cg.Module):
    """U only ever on the right of matmuls, twice (its gradient is hoisted out of the
    reverse loop and sums both); V in a matmul and elementwise (stays in the loop)."""

    def __init__(self, width, rng):
        super().__init__(
            inputs=(cg.Variable("x"), cg.Variable("h")),
            params=(
                cg.Parameter("U", rng.normal(size=(width, width)).astype(np.float32) * 0.5),
                cg.Parameter("V", rng.normal(size=(width, width)).astype(np.float32) * 0.5),
            ),
        )

    def call(self, x, h):
        return op.tanh(x @ self.param("U") + h @ self.param("U") + (h @ self.param("V")) * op.mean(self.param("V")))


class _ScannedOnce(cg.Module):
    def __init__(self, cell):
        super().__init__(inputs=(cg.Variable("xs"), cg.Variable("h0")))
        self.cell = cell

    def call(self, xs, h0):
        return op.scan(self.cell, [h0], [xs])


@pytest.mark.parametrize("batch", [(), (2,), (2, 1)], ids=str)
def test_scan_hoists_only_weights_used_as_matmul_matrices(batch):
    width, rng = 3, np.random.default_rng(len(batch))

    def reference(params, xs, h0):
        U, V = params["cell/U"], params["cell/V"]
        step = lambda h, x: (jnp.tanh(x @ U + h @ U + (h @ V) * jnp.mean(V)),) * 2  # noqa: E731
        return jax.lax.scan(step, h0, xs)[1]

    xs, h0 = rng.normal(size=(4,) + batch + (width,)), rng.normal(size=batch + (width,))
    report = check_gradients(_ScannedOnce(_SharingCell(width, rng)), reference, [xs, h0], seed=len(batch))
    assert report.inputs == ["xs", "h0", "param 'cell/U'", "param 'cell/V'"]


def _attention_reference(q, k, v, mask=None, scale=0.5):
    scores = q @ jnp.swapaxes(k, -1, -2) * scale
    return jax.nn.softmax(scores if mask is None else jnp.where(mask, scores, op.MASKED)) @ v


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("shapes", [[(2, 3, 4, 2), (2, 3, 5, 2), (2, 3, 5, 3)], [(4, 2), (1, 3, 2), (3, 2)]], ids=str)
def test_attention_against_jax_and_finite_differences(shapes, masked):
    """op.attention's fused backward, batched and broadcast, with a mask whose first
    row hides every key (uniform probabilities, no gradient to q or k there)."""
    rng = np.random.default_rng(len(shapes[0]))
    q, k, v = (rng.normal(size=s) for s in shapes)
    if not masked:
        check_gradients(lambda q, k, v: op.attention(q, k, v, scale=0.5), _attention_reference, [q, k, v])
        return
    mask = rng.uniform(size=(shapes[0][-2], shapes[1][-2])) < 0.6
    mask[0] = False
    report = check_gradients(
        lambda q, k, v, m: op.attention(q, k, v, m, scale=0.5), _attention_reference, [q, k, v, mask]
    )
    assert report.inputs == ["q", "k", "v"]


def _lstm_update_reference(gates, c):
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jnp.concatenate([jax.nn.sigmoid(o) * jnp.tanh(c), c], axis=-1)


@pytest.mark.parametrize(
    "shapes", [[(3, 8), (3, 2)], [(2, 3, 12), (2, 1, 3)], [(3, 8), (2, 1, 2)], [(8,), (2,)]], ids=str
)
def test_lstm_update_against_jax_and_finite_differences(shapes):
    """op.lstm_update's fused backward, batched, with the cell state broadcast against
    the gates both ways."""
    rng = np.random.default_rng(len(shapes[0]))
    gates, c = (rng.normal(size=s) * 2 for s in shapes)
    report = check_gradients(op.lstm_update, _lstm_update_reference, [gates, c])
    assert report.inputs == ["gates", "c"]


def test_lstm_update_float32_matches_the_textbook_formula_and_reads_no_output():
    """Its sigmoids come from one tanh over the gates: in float32 the state agrees with
    sigmoid/tanh evaluated separately to rounding, saturated gates included; its vjp
    does not read its output (a loop need not keep it)."""
    gates = jnp.asarray(np.random.default_rng(0).normal(size=(64, 4 * 16)) * 10, jnp.float32)
    c = jnp.asarray(np.random.default_rng(1).normal(size=(64, 16)), jnp.float32)
    got = op.lstm_update(gates, c)
    np.testing.assert_allclose(got.value, _lstm_update_reference(gates, c), rtol=1e-6, atol=3e-7)
    leaves = [cg.InputNode(v, cg.Variable(n)) for v, n in ((gates, "gates"), (c, "c"))]
    for leaf in leaves:
        leaf.requires_grad = True
    g = jnp.ones(got.shape, jnp.float32)
    expected = op.LSTMUpdate().vjp(g, got.value, *leaves)
    for a, b in zip(op.LSTMUpdate().vjp(g, jnp.full(got.shape, 7.0), *leaves), expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_softmax_is_stable_for_huge_logits():
    logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    np.testing.assert_allclose(op.softmax(logits).value, jax.nn.softmax(logits), atol=1e-7)
    np.testing.assert_allclose(op.log_softmax(logits).value, jax.nn.log_softmax(logits))
    assert np.isfinite(op.log_softmax(logits).value).all()


@st.composite
def matmul_shapes(draw):
    batch = draw(mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3)).input_shapes
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    a = (k,) if draw(st.integers(0, 4)) == 0 else batch[0] + (m, k)
    b = (k,) if draw(st.integers(0, 4)) == 0 else batch[1] + (k, n)
    return a, b


@examples
@given(shapes=matmul_shapes(), seed=seeds)
@example(shapes=((2, 1, 3, 4), (5, 4, 2)), seed=0)  # batch dims broadcast both ways
@example(shapes=((2, 3, 4), (4, 5)), seed=1)  # a batch against one matrix
@example(shapes=((4,), (2, 4, 3)), seed=2)  # a vector against a batch
@example(shapes=((2, 3, 4), (4,)), seed=3)
def test_matmul(shapes, seed):
    rng = np.random.default_rng(seed)
    check_gradients(op.matmul, jnp.matmul, [rng.normal(size=s) for s in shapes], seed)


@examples
@given(shapes=st.sampled_from([((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4))]), seed=seeds)
def test_dot(shapes, seed):
    rng = np.random.default_rng(seed)
    check_gradients(op.dot, jnp.dot, [rng.normal(size=s) for s in shapes], seed)


@st.composite
def reshapes(draw):
    shape = draw(shapes)
    size = int(np.prod(shape))
    target = draw(st.sampled_from([(size,), (-1,), tuple(reversed(shape)), (1, size, 1), shape + (1,)]))
    return shape, target


@examples
@given(case=reshapes(), seed=seeds)
def test_reshape(case, seed):
    shape, target = case
    check_gradients(
        lambda x: op.reshape(x, target),
        lambda x: jnp.reshape(x, target),
        [np.random.default_rng(seed).normal(size=shape)],
        seed,
    )


@settings(max_examples=16, deadline=None)  # cheap (one small operator): more random permutations
@given(shape=array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=3), data=st.data(), seed=seeds)
def test_transpose(shape, data, seed):
    axes = data.draw(st.none() | st.permutations(range(len(shape))).map(tuple))
    if axes and data.draw(st.booleans()):
        axes = tuple(a - len(shape) for a in axes)  # negative axes
    check_gradients(
        lambda x: op.transpose(x, axes),
        lambda x: jnp.transpose(x, axes),
        [np.random.default_rng(seed).normal(size=shape)],
        seed,
    )


@pytest.mark.parametrize(
    "shape, axes",
    [
        ((2, 3, 4), (1, 2, 0)),  # 3-cycles: a permutation that is not its own inverse, so a backward
        ((2, 3, 4), (2, 0, 1)),  # rule using the forward permutation instead of its inverse fails
        ((3, 3, 3), (1, 2, 0)),  # square: the wrong rule keeps the shape and gives wrong values
        ((2, 3, 4), (-2, -1, -3)),  # negative axes
        ((2, 3, 4, 5), (1, 3, 0, 2)),  # a 4-cycle
        ((2, 3, 4, 5), (0, 2, 3, 1)),  # a 3-cycle among the last axes
        ((2, 3), (1, 0)),  # a swap (its own inverse: the rule must get this right too)
        ((2, 3, 4), None),
    ],
    ids=str,
)
def test_transpose_permutations_that_expose_an_inverted_rule(shape, axes):
    check_gradients(
        lambda x: op.transpose(x, axes),
        lambda x: jnp.transpose(x, axes),
        [np.random.default_rng(0).normal(size=shape)],
        seed=0,
    )


@examples
@given(target=shapes, data=st.data(), seed=seeds)
def test_broadcast_to(target, data, seed):
    shape = data.draw(broadcastable_shapes(target, max_dims=len(target)))
    assume(np.broadcast_shapes(shape, target) == target)
    check_gradients(
        lambda x: op.broadcast_to(x, target),
        lambda x: jnp.broadcast_to(x, target),
        [np.random.default_rng(seed).normal(size=shape)],
        seed,
    )


@pytest.mark.parametrize("shape, target", [((3, 1), (2, 3, 4)), ((1, 4), (3, 4)), ((), (2, 2))], ids=str)
def test_broadcast_to_stretching_and_adding_axes(shape, target):
    check_gradients(
        lambda x: op.broadcast_to(x, target),
        lambda x: jnp.broadcast_to(x, target),
        [np.random.default_rng(0).normal(size=shape)],
        seed=0,
    )


@pytest.mark.parametrize("name", ["concat", "stack"])
@examples
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=3), count=st.integers(1, 3), data=st.data(), seed=seeds)
def test_join(name, shape, count, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(seed)
    if name == "concat":  # inputs may differ in size along the axis
        args = [
            rng.normal(
                size=shape[: axis % len(shape)] + (data.draw(st.integers(1, 3)),) + shape[axis % len(shape) + 1 :]
            )
            for _ in range(count)
        ]
        fn, reference = (lambda *xs: op.concat(xs, axis)), (lambda *xs: jnp.concatenate(xs, axis))
    else:
        args = [rng.normal(size=shape) for _ in range(count)]
        fn, reference = (lambda *xs: op.stack(xs, axis)), (lambda *xs: jnp.stack(xs, axis))
    check_gradients(fn, reference, args, seed)


@examples
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=3), data=st.data(), seed=seeds)
def test_getitem_basic(shape, data, seed):
    key = data.draw(basic_indices(shape, allow_newaxis=True))
    check_gradients(lambda x: x[key], lambda x: x[key], [np.random.default_rng(seed).normal(size=shape)], seed)


SLICE_KEYS = [  # keys of slices only, whose backward is a zero padding: each way a padding can be wrong
    (slice(1, 3),),
    (slice(None), slice(0, 2)),
    (Ellipsis, slice(2, None)),
    (slice(0, 1), Ellipsis, slice(1, 4, 2)),
    (slice(-3, -1), slice(None, None, 3)),
    (slice(None, 5), slice(1, 2), slice(0, 2)),
    (Ellipsis,),
    (slice(2, 1),),
    (slice(None, None, -1),),
]  # the last two: empty and reversed, the scatter's way


@pytest.mark.parametrize("key", SLICE_KEYS, ids=str)
def test_getitem_slices(key):
    """Slices of a (4, 5, 3) array, the key shorter than the rank and with Ellipsis in
    every position, steps, negative bounds: gradients against jax.vjp."""
    x = np.random.default_rng(len(key)).normal(size=(4, 5, 3))
    check_gradients(lambda x: x[key], lambda x: x[key], [x])


@examples
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=3), seed=seeds)
def test_getitem_integer_array_with_repeats(shape, seed):
    rng = np.random.default_rng(seed)
    index = rng.integers(0, shape[0], size=(5,))  # repeats must accumulate
    check_gradients(lambda x: x[index], lambda x: x[index], [rng.normal(size=shape)], seed)


@examples
@given(
    shape=array_shapes(min_dims=1, max_dims=3, max_side=3),
    index_shape=array_shapes(max_dims=2),
    data=st.data(),
    seed=seeds,
)
def test_take(shape, index_shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, shape[axis], size=index_shape)
    check_gradients(
        lambda x: op.take(x, indices, axis), lambda x: jnp.take(x, indices, axis=axis), [rng.normal(size=shape)], seed
    )


def _conv_reference(stride, padding):
    """conv2d as a sum over kernel offsets of strided slices times kernel columns: its
    jax.vjp never transposes a convolution (XLA 0.10's CPU compiler aborts on some of those)."""

    def reference(x, w):
        strides = _pair(stride, "stride")
        (top, bottom), (left, right) = _padding(padding, x.shape[2:], w.shape[2:], strides)
        padded = jnp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        out = [(n - k) // s + 1 for n, k, s in zip(padded.shape[2:], w.shape[2:], strides, strict=True)]
        return sum(
            jnp.einsum(
                "nchw,oc->nohw",
                padded[
                    :,
                    :,
                    a : a + strides[0] * (out[0] - 1) + 1 : strides[0],
                    b : b + strides[1] * (out[1] - 1) + 1 : strides[1],
                ],
                w[:, :, a, b],
            )
            for a in range(w.shape[2])
            for b in range(w.shape[3])
        )

    return reference


@examples
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    o=st.integers(1, 3),
    h=st.integers(3, 7),
    w=st.integers(3, 7),
    k=st.integers(1, 3),
    stride=st.sampled_from([1, 2, (2, 1), 3]),
    padding=st.sampled_from([0, 1, (1, 2), "same", "valid", ((0, 1), (2, 0))]),
    seed=seeds,
)
@example(n=2, c=2, o=3, h=4, w=3, k=2, stride=2, padding=1, seed=0)  # aborted XLA 0.10's CPU compiler (convolution.py)
def test_conv2d(n, c, o, h, w, k, stride, padding, seed):
    rng = np.random.default_rng(seed)
    check_gradients(
        lambda x, kernel: op.conv2d(x, kernel, stride, padding),
        _conv_reference(stride, padding),
        [rng.normal(size=(n, c, h, w)), rng.normal(size=(o, c, k, k + 1 if k < 3 else k))],
        seed,
    )


def _pool_reference(init, reducer, kernel, stride, padding, scale=1.0):
    kernel, padding = _pair(kernel, "k"), _pair(padding, "p")
    stride = _pair(stride, "s") if stride is not None else kernel

    def reference(x):
        pads = ((0, 0), (0, 0)) + tuple((p, p) for p in padding)
        return lax.reduce_window(x, init, reducer, (1, 1) + kernel, (1, 1) + stride, pads) * scale

    return reference


@pytest.mark.parametrize("kind", ["max", "avg"])
@examples
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 2),
    h=st.integers(2, 7),
    w=st.integers(2, 7),
    kernel=st.sampled_from([1, 2, 3, (2, 3)]),
    stride=st.sampled_from([None, 1, 2, (1, 2)]),
    padding=st.sampled_from([0, 1]),
    seed=seeds,
)
def test_pool2d(kind, n, c, h, w, kernel, stride, padding, seed):
    kh, kw = _pair(kernel, "k")
    assume(kh <= h + 2 * padding and kw <= w + 2 * padding)  # at least one window fits
    assume(2 * padding <= min(kh, kw))  # no window lies entirely in the padding
    x = np.random.default_rng(seed).normal(size=(n, c, h, w))
    if kind == "max":
        reference = _pool_reference(-jnp.inf, lax.max, kernel, stride, padding)
        fn = lambda x: op.max_pool2d(x, kernel, stride, padding)  # noqa: E731
    else:
        reference = _pool_reference(0.0, lax.add, kernel, stride, padding, 1 / (kh * kw))
        fn = lambda x: op.avg_pool2d(x, kernel, stride, padding)  # noqa: E731
    check_gradients(fn, reference, [x], seed)


@examples
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=5), rate=st.sampled_from([0.0, 0.1, 0.5, 0.9]), seed=seeds)
def test_dropout(shape, rate, seed):
    key = jax.random.PRNGKey(seed % 1000)

    def reference(x):
        keep = jax.random.bernoulli(key, 1 - rate, x.shape)
        return jnp.where(keep, x / (1 - rate), 0)

    check_gradients(
        lambda x: op.dropout(x, key, rate), reference, [np.random.default_rng(seed).normal(size=shape)], seed
    )


def test_dropout_keeps_about_one_minus_rate_and_depends_on_key():
    x = jnp.ones((100, 100))
    a = op.dropout(x, jax.random.PRNGKey(0), 0.3).value
    b = op.dropout(x, jax.random.PRNGKey(1), 0.3).value
    assert abs(float((a != 0).mean()) - 0.7) < 0.02
    np.testing.assert_allclose(a[a != 0], 1 / 0.7, rtol=1e-6)
    assert (a != b).any()


@pytest.mark.parametrize(
    "fn, reference",
    [
        (op.sum, jnp.sum),
        (op.mean, jnp.mean),
        (op.max, jnp.max),
        (op.logsumexp, jax.scipy.special.logsumexp),
        (op.softmax, jax.nn.softmax),
    ],
)
def test_numpy_integer_axes(fn, reference):
    check_gradients(
        lambda x: fn(x, axis=np.int64(1)), lambda x: reference(x, axis=1), [np.arange(6.0).reshape(2, 3)], seed=0
    )


def test_numpy_integer_stride():
    image = jnp.ones((1, 1, 5, 5))
    assert op.conv2d(image, jnp.ones((1, 1, 3, 3)), stride=np.int64(2)).shape == (1, 1, 2, 2)


def test_take_without_axis_reads_the_flattened_array():
    indices = jnp.array([[0, 4], [5, 5]])
    check_gradients(
        lambda x: op.take(x, indices, axis=None), lambda x: jnp.take(x, indices), [np.arange(6.0).reshape(2, 3)], seed=0
    )


def test_integer_max_pool_and_low_precision_max_gradient_dtype():
    ints = jnp.arange(16, dtype=jnp.int32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(op.max_pool2d(ints, 2).value, [[[[5, 7], [13, 15]]]])
    for dtype in (jnp.bfloat16, jnp.float16):

        class Max(cg.Module):
            def __init__(self):
                super().__init__(inputs=(cg.Variable("x"),))

            def call(self, x):
                return op.max(x)

        m = Max()
        result = m(jnp.array([1.0, 3.0, 2.0], dtype))
        result.back()
        assert result.grad(m.input("x")).dtype == dtype


def test_gelu_backward_from_its_output_holds_at_zero_tiny_and_huge_inputs():
    """The exact GELU's backward reads Phi(x) as out / x: right at x = 0, for tiny and
    for large |x| too (float32, against JAX's derivative of jax.nn.gelu)."""
    x = jnp.array([0.0, -0.0, 1e-30, -1e-30, 3e-3, -3.0, -12.0, -30.0, 12.0, 1e4], jnp.float32)
    gelu, leaf = op.Gelu(), cg.InputNode(x, cg.Variable("x"))
    (got,) = gelu.vjp(jnp.ones_like(x), gelu.call(leaf), leaf)
    expected = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-30)


def test_gelu_accepts_pytorch_spellings():
    x = jnp.array([1.0])
    np.testing.assert_allclose(op.gelu(x, approximate="none").value, jax.nn.gelu(x, approximate=False))
    np.testing.assert_allclose(op.gelu(x, approximate="tanh").value, jax.nn.gelu(x, approximate=True))
    with pytest.raises(ValueError, match="approximate must be"):
        op.gelu(x, approximate="fast")


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
