"""Normalization: op.layer_norm (any axes; accurate on constant rows and on axes of size
2), op.rms_norm, and the layers BatchNorm (batch statistics when training, running ones
otherwise, kept as cg.State: saved, loaded, carried by TrainStep), GroupNorm, RMSNorm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from zkynet import checkpoint, optim
from zkynet.framework import cg, op
from zkynet.framework.compile import EvalStep, TrainStep
from zkynet.gradcheck import check_gradients
from zkynet.models.layers import BatchNorm, GroupNorm, LayerNorm, RMSNorm

from .second_order import check_second_order


def normalize(x, axes, eps=1e-5):
    centered = x - jnp.mean(x, axes, keepdims=True)
    return centered * lax.rsqrt(jnp.mean(centered * centered, axes, keepdims=True) + eps)


def rms(x, eps=1e-6):
    return x * lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + eps)


@pytest.mark.parametrize("shape, axis", [((3, 5), -1), ((2, 2), -1), ((4, 1), -1), ((3, 2, 4), (0, 2)), ((2, 3), None)])
def test_layer_norm_over_axes(shape, axis):
    x = np.random.default_rng(len(shape)).normal(size=shape)
    axes = tuple(range(len(shape))) if axis is None else axis

    def fn(x):
        return op.layer_norm(x, 1e-5, axis if axis is not None else axes)

    check_gradients(fn, lambda x: normalize(x, axes), [x])
    check_second_order(fn, lambda x: normalize(x, axes), [x])


@pytest.mark.parametrize("shape", [(4, 6), (3, 2), (5, 1)])
def test_rms_norm(shape):
    x = np.random.default_rng(shape[1]).normal(size=shape)
    check_gradients(op.rms_norm, rms, [x])
    check_second_order(op.rms_norm, rms, [x])


@jax.jit  # one program per shape: run eagerly, each of JAX's small kernels would compile on its own
def _exact_gradient(x, w):
    return jax.grad(lambda x: jnp.sum(normalize(x, -1) * w))(x)


def _float64_gradient(x, w):
    """The exact gradient of <layer norm(x), w> at these values: JAX's, in float64."""
    with jax.enable_x64(True):
        return np.asarray(_exact_gradient(jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64)))


@pytest.mark.parametrize("width", [2, 3, 16])
def test_layer_norm_rule_is_accurate_in_float32(width):
    """The fuzz's two misses: a constant row (JAX gives 0 for a uniform cotangent; the old
    rule -4.0e-5) and an axis of size 2 (2.1e-4 relative). Against the exact gradient of the
    same float32 inputs (float64): within a few float32 roundings of the rule's largest term
    (1/std times the cotangent), and exactly 0 on constant rows for a uniform cotangent."""
    rng = np.random.default_rng(width)
    x = (rng.normal(size=(64, width)) * rng.uniform(0.01, 100, size=(64, 1))).astype(np.float32)
    x[:8] = rng.normal(size=(8, 1)).astype(np.float32) * 30  # constant rows
    inv_std = 1 / np.sqrt(np.var(x.astype(np.float64), axis=1, keepdims=True) + 1e-5)
    for w in (np.ones_like(x), rng.normal(size=x.shape).astype(np.float32)):
        node = cg.InputNode(jnp.asarray(x), cg.Variable("x"))
        (ours,) = cg.gradients(op.sum(op.layer_norm(node) * w), [node], create_graph=False)
        exact = _float64_gradient(x, w)
        error = np.abs(np.asarray(ours, np.float64) - exact)
        if width == 2:  # the gradient is eps / (var + eps) times smaller than the rule's terms: relative to itself
            assert np.all(error <= 1e-5 * np.abs(exact).max(axis=1, keepdims=True) + 1e-30), error.max()
        else:
            assert np.all(error <= 2e-6 * inv_std * np.abs(w).max()), (error / (inv_std * np.abs(w).max())).max()
        if np.all(w == 1):  # layer norm's outputs sum to zero, whatever x is: the gradient is 0
            assert np.abs(np.asarray(ours)[:8]).max() == 0.0


def test_batch_norm_trains_on_batch_statistics_and_evaluates_on_running_ones():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 3, 4, 2)) * 2 + 1, jnp.float32)
    bn = BatchNorm(3, momentum=0.25)
    np.testing.assert_allclose(bn(x).value, x / np.sqrt(1 + 1e-5), rtol=1e-6)  # fresh running stats: identity
    trained = bn(x, rng=0)  # a training call: batch statistics, running ones updated (PyTorch's formula)
    np.testing.assert_allclose(trained.value, normalize(x, (0, 2, 3)), rtol=1e-5, atol=1e-5)
    mean, var = np.mean(np.asarray(x), (0, 2, 3)), np.var(np.asarray(x), (0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.param("running_mean").value, 0.25 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.param("running_var").value, 0.75 + 0.25 * var, rtol=1e-5)
    expected = (x - (0.25 * mean).reshape(1, 3, 1, 1)) / np.sqrt((0.75 + 0.25 * var).reshape(1, 3, 1, 1) + 1e-5)
    np.testing.assert_allclose(bn(x).value, expected, rtol=1e-5, atol=1e-5)
    assert list(bn.state_dict()) == ["scale", "shift", "running_mean", "running_var"]


def test_batch_norm_gradients():
    """Evaluation (running statistics) with the gradient checker; training (batch
    statistics, what TrainStep differentiates) against jax.vjp, both in float64."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 2, 3))
    bn = BatchNorm(2)
    bn.param("scale").value = jnp.asarray(rng.normal(size=2), jnp.float32)
    bn.param("running_var").value = jnp.asarray([0.5, 2.0], jnp.float32)

    def evaluation(p, x):
        shaped = {k: v.reshape(1, 2, 1) for k, v in p.items()}
        return (x - shaped["running_mean"]) / jnp.sqrt(shaped["running_var"] + 1e-5) * shaped["scale"] + shaped["shift"]

    check_gradients(bn, evaluation, [x])
    with jax.enable_x64(True):
        for p in bn.params:
            p.value = jnp.asarray(p.value, jnp.float64)
        scale, shift = bn.param("scale").value, bn.param("shift").value
        cotangent = jnp.asarray(rng.normal(size=x.shape))
        graph = bn(jnp.asarray(x), rng=0)
        graph.back(cotangent)

        def training(x, scale, shift):
            return normalize(x, (0, 2)) * scale.reshape(1, 2, 1) + shift.reshape(1, 2, 1)

        @jax.jit  # one program: run eagerly, each of JAX's small kernels would compile on its own
        def reference(x, scale, shift, cotangent):
            value, pull = jax.vjp(training, x, scale, shift)
            return value, pull(cotangent)

        value, expected = reference(jnp.asarray(x), scale, shift, cotangent)
        np.testing.assert_allclose(graph.value, value, rtol=1e-12)
        found = (graph.grad(bn.inputs[0]), graph.grad(bn.param("scale")), graph.grad(bn.param("shift")))
        for a, b in zip(found, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


class _Net(cg.Module):
    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"),))
        self.bn = BatchNorm(3)
        self.gn = GroupNorm(3, 3)
        self.norm = RMSNorm(4)

    def call(self, x):
        return self.norm(self.gn(self.bn(x)) * 2.0)


def _loss(out, t):
    return op.mean((out - t) ** 2)


def test_batch_norm_state_through_train_step_checkpoints_and_eval(tmp_path):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(8, 3, 5, 4)) + 3, jnp.float32)
    t = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    net = _Net()
    step = TrainStep(net, _loss, optim.Adam(1e-2))
    assert set(step.opt_state["m"]) == {"bn/scale", "bn/shift", "gn/scale", "gn/shift", "norm/scale"}  # no state
    expected_mean = np.zeros(3)
    for _ in range(3):
        batch_mean = np.mean(np.asarray(x), (0, 2, 3))
        step(x, t)
        expected_mean = 0.9 * expected_mean + 0.1 * batch_mean
    np.testing.assert_allclose(net.bn.param("running_mean").value, expected_mean, rtol=1e-5)
    path = tmp_path / "state.npz"
    checkpoint.save(path, step.state_dict())
    other = _Net()
    other_step = TrainStep(other, _loss, optim.Adam(1e-2))
    other_step.load_state_dict(checkpoint.load(path))
    np.testing.assert_array_equal(other.bn.param("running_var").value, net.bn.param("running_var").value)
    other.load_state_dict(net.state_dict())
    evaluate = EvalStep(net, _loss)
    assert float(evaluate(x, t)["loss"]) == pytest.approx(float(EvalStep(other, _loss)(x, t)["loss"]), rel=1e-6)
    before = np.asarray(net.bn.param("running_mean").value)
    evaluate(x, t)  # evaluation leaves the running statistics alone
    np.testing.assert_array_equal(net.bn.param("running_mean").value, before)


def test_group_norm_and_rms_norm_layers_against_references():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 3))
    gn = GroupNorm(2, 4)
    gn.param("scale").value = jnp.asarray(rng.normal(size=4), jnp.float32)

    def group_reference(p, x):
        grouped = normalize(x.reshape(2, 2, -1), -1).reshape(x.shape)
        return grouped * p["scale"].reshape(1, 4, 1) + p["shift"].reshape(1, 4, 1)

    check_gradients(gn, group_reference, [x])
    norm = RMSNorm(3)
    check_gradients(norm, lambda p, x: rms(x) * p["scale"], [x])
    assert isinstance(LayerNorm(3), cg.Module)


@pytest.mark.parametrize(
    "layer, x, match",
    [
        (BatchNorm(3), jnp.ones((2, 4, 5)), r"expected x shaped \(N, 3, \.\.\.\)"),
        (GroupNorm(2, 4), jnp.ones((2, 3, 5)), r"expected x shaped \(N, 4, \.\.\.\)"),
    ],
)
def test_layers_refuse_the_wrong_channels(layer, x, match):
    with pytest.raises(cg.ShapeError, match=match):
        layer(x)


def test_batch_norm_needs_two_values_per_channel_to_train():
    with pytest.raises(cg.ShapeError, match=r"more than one value per channel"):
        BatchNorm(2)(jnp.ones((1, 2)), rng=0)
    with pytest.raises(ValueError, match=r"do not split into 3 groups"):
        GroupNorm(3, 4)
