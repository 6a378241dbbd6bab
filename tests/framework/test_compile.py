"""The compile path: one jitted XLA program per step, gradients from zkynet's back(),
parameters written back, same numbers as eager, vmap, exact save/restore."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet import checkpoint, losses, optim
from zkynet.data import Batches, load_digits
from zkynet.framework import cg
from zkynet.framework.compile import EvalStep, TrainStep, forward
from zkynet.models.fcn import MLP

DIGITS = load_digits()


def batches(count, size=32, seed=0):
    it = Batches(DIGITS.train, size, seed=seed, drop_last=True).epoch(0)
    return [next(it) for _ in range(count)]


def test_compiled_and_eager_training_give_the_same_losses():
    runs = []
    for jit in (True, False):
        model = MLP([64, 32, 10], dropout=0.2, key=0)  # dropout: same keys in both
        step = TrainStep(model, losses.softmax_cross_entropy, optim.Adam(1e-2), seed=5, jit=jit)
        runs.append([float(step(*b)["loss"]) for b in batches(6)])
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5)
    assert runs[0][-1] < runs[0][0]


def jax_mlp(params, x):
    h = jax.nn.relu(x @ params["layers.0/W"] + params["layers.0/b"])
    return h @ params["layers.1/W"] + params["layers.1/b"]


def test_gradients_equal_jax_grad_of_the_same_model():
    model = MLP([64, 16, 10], key=1)
    before = {n: np.asarray(p.value) for n, p in model.named_parameters().items()}
    x, y = batches(1)[0]
    step = TrainStep(model, losses.softmax_cross_entropy, optim.SGD(1.0))
    step(x, y)
    ours = {n: before[n] - np.asarray(p.value) for n, p in model.named_parameters().items()}  # lr 1: the gradient

    def loss(params):
        logits = jax_mlp(params, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    reference = jax.grad(loss)({n: jnp.asarray(v) for n, v in before.items()})
    for name in ours:
        np.testing.assert_allclose(ours[name], reference[name], rtol=2e-4, atol=1e-6)


def test_parameters_are_written_back_and_the_step_compiles_once():
    model = MLP([64, 8, 10], key=2)
    step = TrainStep(model, losses.softmax_cross_entropy, optim.SGD(0.1), metrics=losses.classification_metrics)
    w = model.named_parameters()["layers.0/W"]
    start = np.asarray(w.value)
    for b in batches(4):
        metrics = step(*b)
    assert set(metrics) == {"loss", "accuracy"}
    assert not np.array_equal(start, np.asarray(w.value))
    assert step.step == 4 and step._step._cache_size() == 1
    np.testing.assert_allclose(forward(model)(b[0]), forward(model, jit=False)(b[0]), rtol=1e-5, atol=1e-6)


def test_eval_step_matches_an_eager_graph():
    model = MLP([64, 8, 10], key=3)
    x, y = batches(1)[0]
    evaluated = EvalStep(model, losses.softmax_cross_entropy, losses.classification_metrics)(x, y)
    logits = model(x).value
    np.testing.assert_allclose(evaluated["loss"], losses.softmax_cross_entropy(logits, y).value, rtol=1e-5)
    np.testing.assert_allclose(evaluated["accuracy"], losses.accuracy(logits, y))


def test_unused_parameters_get_zero_gradient():
    class PartlyUsed(cg.Module):
        def __init__(self):
            super().__init__(
                inputs=(cg.Variable("x"),),
                params=(cg.Parameter("used", jnp.ones((64, 10))), cg.Parameter("spare", jnp.ones(3))),
            )

        def call(self, x):
            return x @ self.param("used")

    model = PartlyUsed()
    step = TrainStep(model, losses.softmax_cross_entropy, optim.SGD(0.1))
    step(*batches(1)[0])
    np.testing.assert_array_equal(model.param("spare").value, jnp.ones(3))


def test_pure_step_under_vmap_trains_an_ensemble():
    model = MLP([64, 8, 10], key=0)
    step = TrainStep(model, losses.softmax_cross_entropy, optim.Adam(1e-2))
    members = [MLP([64, 8, 10], key=k).named_parameters() for k in range(3)]
    params = [{n: p.value for n, p in m.items()} for m in members]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *params)
    states = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[step.optimizer.init(p) for p in params])
    batch = batches(1)[0]
    new, _, metrics = jax.jit(jax.vmap(step.pure, in_axes=(0, 0, None, None)))(stacked, states, batch, step.rng)
    for i, p in enumerate(params):
        single, _, single_metrics = step.pure(p, step.optimizer.init(p), batch, step.rng)
        np.testing.assert_allclose(metrics["loss"][i], single_metrics["loss"], rtol=1e-5)
        for name in p:
            np.testing.assert_allclose(new[name][i], single[name], rtol=1e-5, atol=1e-6)


def test_save_and_restore_continue_exactly(tmp_path):
    data = batches(8, seed=3)

    def fresh():
        return TrainStep(MLP([64, 16, 10], dropout=0.1, key=4), losses.softmax_cross_entropy, optim.AdamW(1e-2), seed=9)

    uninterrupted = fresh()
    for b in data:
        uninterrupted(*b)

    first = fresh()
    for b in data[:5]:
        first(*b)
    checkpoint.save(tmp_path / "ckpt.npz", first.state_dict())
    resumed = fresh()
    resumed.load_state_dict(checkpoint.load(tmp_path / "ckpt.npz"))
    assert resumed.step == 5
    for b in data[5:]:
        resumed(*b)
    for name, p in uninterrupted.params.items():
        np.testing.assert_array_equal(p.value, resumed.params[name].value)


def test_load_state_dict_rejects_another_model():
    step = TrainStep(MLP([64, 8, 10]), losses.softmax_cross_entropy, optim.SGD(0.1))
    other = TrainStep(MLP([64, 8, 8, 10]), losses.softmax_cross_entropy, optim.SGD(0.1))
    with pytest.raises(KeyError, match="disagree on parameters"):
        step.load_state_dict(other.state_dict())


def test_rng_switches_dropout_on_and_is_reproducible():
    model = MLP([64, 32, 10], dropout=0.5, key=0)
    x = jnp.asarray(DIGITS.train.inputs[:4])
    deterministic = model(x).value
    np.testing.assert_array_equal(deterministic, model(x).value)
    a, b = model(x, rng=1).value, model(x, rng=1).value
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, deterministic)
    assert not np.allclose(a, model(x, rng=2).value)


def test_a_batch_jit_cannot_take_is_refused_with_its_place():
    step = TrainStep(MLP([64, 8, 10]), losses.softmax_cross_entropy, optim.SGD(0.1))
    inputs, targets = batches(1)[0]
    with pytest.raises(
        cg.ValueTypeError, match=r"TrainStep: batch item 1: expected a number or a numeric array, got str"
    ):
        step(inputs, "labels")
    with pytest.raises(cg.ValueTypeError, match=r"EvalStep: batch item 0: .* got NoneType None"):
        EvalStep(step.model, losses.softmax_cross_entropy)(None, targets)
    assert step.step == 0  # nothing trained on it
    with pytest.raises(cg.StateDictError, match=r"expected \{'params': \.\.\., 'optimizer': \.\.\.\}.*got NoneType"):
        step.load_state_dict(None)
    with pytest.raises(cg.StateDictError, match=r"with keys \['w'\]"):
        step.load_state_dict({"w": 1})
