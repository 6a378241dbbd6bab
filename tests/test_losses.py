"""Losses: values and gradients (through zkynet's back()) against JAX references,
stability for huge logits, and bad labels refused with the label, its place and the
valid range (under jit they poison the step with NaN instead)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet import losses, optim
from zkynet.framework import cg
from zkynet.framework.compile import TrainStep
from zkynet.framework.errors import LabelError, ShapeError
from zkynet.gradcheck import check_gradients

rng = np.random.default_rng(0)


def reference_softmax_ce(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def reference_bce(logits, targets):
    return jnp.mean(-targets * jax.nn.log_sigmoid(logits) - (1 - targets) * jax.nn.log_sigmoid(-logits))


def test_softmax_cross_entropy_value_and_gradient():
    labels = jnp.array([0, 3, 1, 3, 2])
    check_gradients(
        lambda z: losses.softmax_cross_entropy(z, labels),
        lambda z: reference_softmax_ce(z, labels),
        [rng.normal(size=(5, 4))],
        seed=1,
    )


def test_softmax_cross_entropy_over_sequences():
    labels = jnp.array([[0, 1, 2], [2, 2, 0]])
    logits = rng.normal(size=(2, 3, 4))

    def reference(z):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), labels[..., None], -1))

    check_gradients(lambda z: losses.softmax_cross_entropy(z, labels), reference, [logits], seed=2)


def test_binary_cross_entropy_value_and_gradient():
    targets = jnp.array([0.0, 1.0, 1.0, 0.0, 0.3])
    check_gradients(
        lambda z: losses.binary_cross_entropy(z, targets),
        lambda z: reference_bce(z, targets),
        [rng.normal(size=(5,)) * 3],
        seed=3,
    )


def test_mse_value_and_gradient():
    target = rng.normal(size=(4, 3))
    check_gradients(
        lambda p: losses.mse(p, target), lambda p: jnp.mean((p - target) ** 2), [rng.normal(size=(4, 3))], seed=4
    )


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_cross_entropies_are_stable_for_huge_logits(scale):
    from zkynet.framework import cg

    class Loss(cg.Module):
        def __init__(self, fn):
            super().__init__(inputs=(cg.Variable("z"),))
            self.fn = fn

        def call(self, z):
            return self.fn(z)

    logits = jnp.array([[scale, 0.0, -scale], [0.0, scale, 1.0]])
    labels = jnp.array([2, 1])
    for fn, reference, args in [
        (lambda z: losses.softmax_cross_entropy(z, labels), reference_softmax_ce, (logits, labels)),
        (lambda z: losses.binary_cross_entropy(z, jnp.ones_like(z)), reference_bce, (logits, jnp.ones_like(logits))),
    ]:
        m = Loss(fn)
        result = m(logits)
        result.back()
        grad = result.grad(m.input("z"))
        assert np.isfinite(result.value) and np.isfinite(grad).all()
        np.testing.assert_allclose(result.value, reference(*args), rtol=1e-6)
        np.testing.assert_allclose(grad, jax.grad(reference)(*args), rtol=1e-6, atol=1e-7)


def test_accuracy_helpers():
    logits = jnp.array([[0.1, 2.0], [3.0, -1.0], [0.0, 1.0]])
    assert float(losses.accuracy(logits, jnp.array([1, 0, 0]))) == pytest.approx(2 / 3)
    assert float(losses.binary_accuracy(jnp.array([2.0, -1.0]), jnp.array([1.0, 1.0]))) == 0.5


@pytest.mark.parametrize("loss", [losses.mse, losses.binary_cross_entropy])
@pytest.mark.parametrize("prediction, target", [((4, 1), (4,)), ((4,), (4, 1)), ((4, 3), (4,)), ((2, 3), (3, 3))])
def test_losses_refuse_targets_that_would_broadcast_into_another_meaning(loss, prediction, target):
    """mse(pred (N, 1), target (N,)) compared every prediction with every target: 2.5 instead of 0."""
    with pytest.raises(ShapeError, match="does not fit the prediction shaped"):
        loss(jnp.zeros(prediction), jnp.zeros(target))


def test_a_target_that_broadcasts_to_the_predictions_shape_is_kept():
    assert float(losses.mse(jnp.ones((4, 3)), 0.5).value) == pytest.approx(0.25)
    assert float(losses.mse(jnp.arange(4.0).reshape(4, 1), jnp.arange(4.0).reshape(4, 1)).value) == 0.0


@pytest.mark.parametrize("bad", [2.0, -1.0, 1.0001])
def test_binary_cross_entropy_refuses_targets_that_are_not_probabilities(bad):
    targets = jnp.array([0.0, bad, 1.0])
    with pytest.raises(LabelError, match=f"target {float(jnp.float32(bad))} at \\[1\\] is not a probability"):
        losses.binary_cross_entropy(jnp.zeros(3), targets)
    traced = jax.jit(lambda z, t: losses.binary_cross_entropy(z, t).value)(jnp.zeros(3), targets)
    assert np.isnan(traced)  # under jit: NaN for the NaN guard, never the -0.687 it used to be
    assert np.isfinite(jax.jit(lambda z, t: losses.binary_cross_entropy(z, t).value)(jnp.zeros(3), targets * 0))


# ----------------------------------------------------------------------------- hostile: labels


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


def test_targets_that_are_not_numbers_or_not_probabilities_are_refused_in_any_form():
    with pytest.raises(cg.ValueTypeError, match="mse: the target: expected a number or a numeric array, got str"):
        losses.mse(jnp.arange(4.0), "abcd")
    with pytest.raises(LabelError, match=r"target 2.0 at \[0\] is not a probability"):
        losses.binary_cross_entropy(jnp.zeros(2), [2.0, 0.0])  # a list is checked like an array
    with pytest.raises(LabelError, match=r"target nan at \[0\] is not a probability"):
        losses.binary_cross_entropy(jnp.zeros(2), jnp.array([jnp.nan, 0.5]))
    traced = jax.jit(lambda z, t: losses.binary_cross_entropy(z, t).value)(jnp.zeros(2), jnp.array([jnp.nan, 0.5]))
    assert np.isnan(traced)
    assert float(losses.binary_cross_entropy(jnp.zeros(2), [1.0, 0.0]).value) == pytest.approx(np.log(2))
