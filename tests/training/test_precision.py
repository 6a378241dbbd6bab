"""Mixed precision (precision="bf16"): float32 master weights and optimizer state, the
model's forward and backward pass in bfloat16, the loss in float32.

bfloat16 keeps 8 bits of mantissa: each rounding is off by up to 2**-9 = 0.2% relative
(about 3 significant digits), against float32's 6e-8. So a bf16 run is compared with
the same float32 run (same seed, weights and data order) within tolerances a few
hundred times float32's: each one below is stated with what was measured."""

import jax
import jax.extend
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from tests.fixtures.families import NAMES, family
from tests.training.test_population import ATOL, RTOL
from zkynet import checkpoint, losses, optim
from zkynet.data import load_digits
from zkynet.framework import cg, op
from zkynet.framework.compile import EvalStep, TrainStep
from zkynet.models.fcn import MLP
from zkynet.training import Trainer
from zkynet.training.population import PopulationTrainer

EPOCHS, BATCH, LR = 4, 64, 3e-3
# The digits MLP's per-epoch mean train and validation losses: within 1% of float32's.
# Measured: at most 0.18% apart over these 4 epochs (each epoch's mean averages 22 steps'
# rounding, and the float32 master weights keep every update); 1% leaves 5x room.
CURVE_RTOL = 1e-2
# Final validation accuracy: within 2 of the 359 validation digits (measured: the same).
ACCURACY_ATOL = 2 / 359
# One step's gradient, bf16 against float32 on the same weights and batch, as
# |g_bf16 - g_f32| / |g_f32| (Euclidean norms): over the whole gradient at most 5%, and
# for each parameter at most 15%. Measured for the small models of tests/test_no_jax_autodiff.py:
# 0.3-1.6% whole, at most 6% per parameter (LeNet's conv bias: its gradient sums 128 bfloat16
# cotangents that cancel), 2.6% for the transformer's, 1.3% for the LSTM's.
# A wrong rule (a dropped term, a missing factor) is off by tens of percent or more.
GRADIENT_RTOL, PARAMETER_RTOL = 0.05, 0.15


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def train(digits, precision, epochs=EPOCHS, dropout=0.0):
    model = MLP([64, 64, 10], dropout=dropout, key=0)
    trainer = Trainer(
        model,
        losses.softmax_cross_entropy,
        optim.Adam(LR),
        digits,
        epochs,
        BATCH,
        losses.classification_metrics,
        seed=0,
        precision=precision,
    )
    return trainer, trainer.fit()


@pytest.fixture(scope="module")
def runs(digits):
    return {precision: train(digits, precision) for precision in ("float32", "bf16")}


def curve(history, key):
    return np.array([record[key] for record in history])


def test_the_digits_mlp_in_bf16_follows_float32s_loss_curve(runs):
    (_, f32), (_, bf16) = runs["float32"], runs["bf16"]
    for key in ("train_loss", "val_loss"):
        np.testing.assert_allclose(curve(bf16, key), curve(f32, key), rtol=CURVE_RTOL, err_msg=key)
    assert not np.array_equal(curve(bf16, "train_loss"), curve(f32, "train_loss"))  # it did compute in bf16
    assert abs(bf16[-1]["val_accuracy"] - f32[-1]["val_accuracy"]) <= ACCURACY_ATOL
    assert bf16[-1]["val_accuracy"] > 0.9


def test_master_weights_and_optimizer_state_stay_float32(runs):
    trainer, _ = runs["bf16"]
    state = trainer.state_dict()
    floats = {
        np.asarray(v).dtype
        for v in jax.tree_util.tree_leaves((state["params"], state["optimizer"]))
        if jnp.issubdtype(np.asarray(v).dtype, jnp.floating)
    }
    assert floats == {np.dtype(np.float32)}
    assert {p.value.dtype for p in trainer.model.named_parameters().values()} == {jnp.dtype(jnp.float32)}


def matmul_operand_dtypes(function, *args):
    """The dtypes of every matmul's and convolution's operands in `function`'s program."""
    found = set()

    def walk(jaxpr):
        for equation in jaxpr.eqns:
            if equation.primitive.name in ("dot_general", "conv_general_dilated"):
                found.update(str(v.aval.dtype) for v in equation.invars)
            for inner in jax.extend.core.jaxprs_in_params(equation.params):  # scan bodies
                walk(inner)

    walk(jax.make_jaxpr(function)(*args).jaxpr)
    return found


@pytest.mark.parametrize("name", NAMES)
def test_every_matmul_and_convolution_of_every_model_family_runs_in_bf16(name):
    """No backward rule and no constant promoted a bfloat16 computation to float32 (the
    step would still train, at float32 speed): in train and eval steps alike."""
    model, loss, batch = family(name)
    batch = tuple(jnp.asarray(b) for b in batch)
    step = TrainStep(model, loss, optim.Adam(1e-3), precision="bf16")
    assert matmul_operand_dtypes(step.pure, step.param_values(), step.opt_state, batch, step.rng) == {"bfloat16"}
    evaluate = EvalStep(model, loss, precision="bf16")
    assert matmul_operand_dtypes(evaluate.pure, evaluate.param_values(), batch) == {"bfloat16"}


@pytest.mark.parametrize("name", NAMES)
def test_every_cotangent_comes_back_in_its_primals_dtype(name):
    """back() of each model in bfloat16, its output seeded with bfloat16 ones: every
    parameter's gradient is bfloat16 (one rule's float32 cotangent would spread to all
    those below it). Shapes and dtypes only: traced, never run."""
    model, _, batch = family(name)
    params = model.named_parameters()

    def gradients(values, inputs):
        graph = cg.call_module(
            model, inputs, param_values={p: values[n] for n, p in params.items()}, rng=jax.random.PRNGKey(0)
        )
        graph.back(tuple(jnp.ones(r.shape, r.dtype) for r in graph.roots))
        return [r.value for r in graph.roots], {n: graph.grad(p) for n, p in params.items() if graph.uses(p)}

    def bf16(a):
        return a.astype(jnp.bfloat16) if jnp.issubdtype(a.dtype, jnp.floating) else a

    outputs, grads = jax.eval_shape(
        gradients, {n: bf16(p.value) for n, p in params.items()}, tuple(bf16(jnp.asarray(b)) for b in batch[:-1])
    )
    assert {o.dtype for o in outputs} == {jnp.dtype(jnp.bfloat16)}
    assert grads and {g.dtype for g in grads.values()} == {jnp.dtype(jnp.bfloat16)}


def one_step_gradient(model, loss, batch, precision):
    """The gradient a TrainStep with `precision` hands its optimizer: p - p' after one
    SGD step with lr 1 (exact to float32 rounding of the weights, far below bf16's)."""
    params = model.named_parameters()
    before = {n: jnp.array(p.value) for n, p in params.items()}
    TrainStep(model, loss, optim.SGD(1.0), precision=precision)(*batch)
    after = {n: p.value for n, p in params.items()}
    for n, p in params.items():
        p.value = before[n]
    return {n: np.asarray(before[n] - after[n], np.float64) for n in params}


@pytest.mark.parametrize("name", ["lstm_lm", "transformer_lm", "vae"])  # vae: its noise too
def test_bf16_gradients_are_close_to_float32s(name):
    model, loss, batch = family(name)
    batch = tuple(jnp.asarray(b) for b in batch)
    f32, bf16 = (one_step_gradient(model, loss, batch, precision) for precision in ("float32", "bf16"))

    def norm(grads):
        return np.sqrt(sum(np.sum(g * g) for g in grads.values()))

    assert norm({n: bf16[n] - f32[n] for n in f32}) <= GRADIENT_RTOL * norm(f32)
    for n in f32:
        assert np.linalg.norm(bf16[n] - f32[n]) <= PARAMETER_RTOL * np.linalg.norm(f32[n]), n
    assert any(not np.array_equal(bf16[n], f32[n]) for n in f32)  # it did compute in bf16


def test_bfloat16_is_bf16_and_other_precisions_are_refused_naming_the_allowed_ones(digits):
    model, batch = MLP([64, 10]), (digits.train.inputs[:BATCH], digits.train.targets[:BATCH])
    gradients = [one_step_gradient(model, losses.softmax_cross_entropy, batch, p) for p in ("bf16", "bfloat16")]
    assert all(np.array_equal(gradients[0][n], gradients[1][n]) for n in gradients[0])
    for precision in ("fp16", "float16", "BF16", None):
        message = f"precision must be one of 'float32', 'bf16', 'bfloat16', got {precision!r}"
        with pytest.raises(ValueError, match=message):
            TrainStep(model, losses.softmax_cross_entropy, optim.Adam(1e-3), precision=precision)
        with pytest.raises(ValueError, match=message):
            EvalStep(model, losses.softmax_cross_entropy, precision=precision)
        with pytest.raises(ValueError, match=message):
            Trainer(model, losses.softmax_cross_entropy, optim.Adam(1e-3), digits, 1, BATCH, precision=precision)


def test_a_bf16_run_checkpoints_and_resumes_exactly(digits, runs, tmp_path):
    _, whole = runs["bf16"]
    first, _ = train(digits, "bf16", epochs=2)
    checkpoint.save(tmp_path / "state.npz", first.state_dict())
    model = MLP([64, 64, 10], key=1)  # other weights: the checkpoint's must replace them
    resumed = Trainer(
        model,
        losses.softmax_cross_entropy,
        optim.Adam(LR),
        digits,
        EPOCHS,
        BATCH,
        losses.classification_metrics,
        seed=0,
        precision="bf16",
    )
    resumed.load_state_dict(checkpoint.load(tmp_path / "state.npz"))
    rest = resumed.fit()
    assert [r["epoch"] for r in rest] == [3, 4]
    assert curve(rest, "train_loss").tolist() == curve(whole[2:], "train_loss").tolist()
    trained = runs["bf16"][0].model.named_parameters()
    for name, p in model.named_parameters().items():
        assert p.value.dtype == jnp.float32
        np.testing.assert_array_equal(p.value, trained[name].value)


def test_a_population_trains_each_member_in_bf16_as_it_would_alone(digits):
    """Its members' dropout rates are traced float32 values: they must not turn the
    bfloat16 activations they scale into float32 (see the matmul test above, here too)."""
    alone, history = train(digits, "bf16", epochs=1, dropout=0.1)
    models = [MLP([64, 64, 10], dropout=rate, key=0) for rate in (0.1, 0.2)]
    population = PopulationTrainer(
        models,
        losses.softmax_cross_entropy,
        [optim.Adam(LR), optim.Adam(LR)],
        digits,
        1,
        BATCH,
        losses.classification_metrics,
        seeds=[0, 1],
        precision="bf16",
    )
    step = population.step
    rows = jnp.zeros((2, BATCH), jnp.int32)
    assert matmul_operand_dtypes(
        step.pure, step.params, step.opt_state, step.hyperparameters, step.rates, step.keys, population.data, rows
    ) == {"bfloat16"}
    member = population.fit()[0]
    np.testing.assert_allclose(curve(member, "train_loss"), curve(history, "train_loss"), rtol=RTOL, atol=ATOL)
    for name, p in models[0].named_parameters().items():
        assert p.value.dtype == jnp.float32
        np.testing.assert_allclose(p.value, alone.model.named_parameters()[name].value, rtol=RTOL, atol=ATOL)


def test_a_bf16_value_goes_to_float32_and_its_cotangent_comes_back_in_bf16():
    x = jnp.array([1.5, -2.25, 3.0], jnp.bfloat16)

    class Scaled(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),))

        def call(self, x):
            return op.sum(op.astype(x, jnp.float32) * jnp.array([1.0, 2.0, 3.0]))

    model = Scaled()
    result = model(x)
    result.back()
    assert result.value.dtype == jnp.float32 and float(result.value) == 1.5 - 4.5 + 9.0
    assert result.grad(model.input("x")).dtype == jnp.bfloat16
    np.testing.assert_array_equal(result.grad(model.input("x")), [1.0, 2.0, 3.0])
    node = cg.as_node(x)
    assert op.astype(node, jnp.bfloat16) is node  # already that dtype: no node


def test_a_numpy_bfloat16_array_is_a_value():
    batch = np.array([[0.5, -1.0]], ml_dtypes.bfloat16)
    value = cg.as_node(batch).value
    assert value.dtype == jnp.bfloat16 and value.tolist() == [[0.5, -1.0]]
