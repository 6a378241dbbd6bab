"""Populations: every member trains as the same configuration would alone, stops or
fails alone, and members that are not one architecture are refused."""

import jax
import numpy as np
import pytest

from zkynet import losses, optim
from zkynet.data import load_digits
from zkynet.models.fcn import MLP
from zkynet.training import Callback, NanGuard, NonFiniteLossError, Trainer
from zkynet.training.pbt import Mutation, PopulationBasedTraining
from zkynet.training.population import PopulationStep, PopulationTrainer

EPOCHS, BATCH = 3, 64
# Float32 rounding, not a different computation. Hyperparameters and dropout rates enter as
# traced values rounded exactly as the Python constants are (without that, Adam's 1 - b2 was
# 1.3e-5 off and metrics drifted by 6e-4 over ten epochs); what is left is the order in which
# XLA's batched matmuls sum, and where it fuses multiply-adds: a few float32 ulps per step
# (measured after three epochs here: metrics within 1.2e-7 relative, weights within 1.2e-7
# absolute; after ten epochs of notebook 09's wider MLP, metrics within 4.4e-7). The
# tolerances leave 5-10x room; a wrong dropout rate, key, data order or hyperparameter moves
# weights by ~1e-2 (checked below).
RTOL, ATOL = 2e-6, 1e-6

CONFIGS = [  # (seed, dropout, lr, weight decay, b1): a different value of each per member
    (0, 0.1, 1e-3, 0.0, 0.9),
    (1, 0.2, 3e-3, 0.01, 0.85),
    (2, 0.3, 1e-2, 0.1, 0.8),
]


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def model(seed, dropout):
    return MLP([64, 32, 10], dropout=dropout, key=seed)


def optimizer(lr, decay, b1, steps):
    return optim.AdamW(optim.Warmup(optim.Cosine(lr, steps), 5), b1=b1, weight_decay=decay)


def solo(digits, seed, dropout, lr, decay, b1, epochs=EPOCHS, callbacks=()):
    """The configuration trained alone (for `epochs` of the schedule made for EPOCHS)."""
    steps = EPOCHS * (len(digits.train) // BATCH)
    trained = model(seed, dropout)
    trainer = Trainer(
        trained,
        losses.softmax_cross_entropy,
        optimizer(lr, decay, b1, steps),
        digits,
        epochs,
        BATCH,
        losses.classification_metrics,
        seed=seed,
        callbacks=callbacks,
    )
    return trainer.fit(), trained


def population(digits, configs, callbacks=None, sgd=False, **options):
    steps = EPOCHS * (len(digits.train) // BATCH)
    models = [model(seed, dropout) for seed, dropout, *_ in configs]
    optimizers = [optim.SGD(lr) if sgd else optimizer(lr, decay, b1, steps) for _, _, lr, decay, b1 in configs]
    return PopulationTrainer(
        models,
        losses.softmax_cross_entropy,
        optimizers,
        digits,
        EPOCHS,
        BATCH,
        losses.classification_metrics,
        seeds=[c[0] for c in configs],
        callbacks=callbacks,
        **options,
    ), models


def assert_same_training(history, trained, solo_history, solo_model):
    assert len(history) == len(solo_history)
    for got, want in zip(history, solo_history, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            if key not in ("samples_per_second", "compile_seconds"):  # timings, not results
                np.testing.assert_allclose(got[key], want[key], rtol=RTOL, atol=ATOL, err_msg=key)
    for name, p in solo_model.named_parameters().items():
        np.testing.assert_allclose(trained.named_parameters()[name].value, p.value, rtol=RTOL, atol=ATOL, err_msg=name)


def test_every_member_equals_its_configuration_trained_alone(digits):
    pack, models = population(digits, CONFIGS)
    histories = pack.fit()
    for config, history, trained in zip(CONFIGS, histories, models, strict=True):
        assert_same_training(history, trained, *solo(digits, *config))
    assert [m.status for m in pack.members] == ["FINISHED"] * 3
    finals = [h[-1]["train_loss"] for h in histories]
    assert len(set(finals)) == 3  # the members really differ
    _, other_rate = solo(digits, 0, 0.2, *CONFIGS[0][2:])  # member 0 but for its dropout rate: far outside
    gaps = [
        np.max(np.abs(models[0].named_parameters()[n].value - p.value))
        for n, p in other_rate.named_parameters().items()
    ]
    assert max(gaps) > 100 * ATOL


def test_traced_hyperparameters_train_as_the_constants_would(digits):
    """Population-based training keeps its hyperparameters traced even when every member has
    the same value: members train as they would alone all the same."""
    same = [(0, 0.1, 3e-3, 0.01, 0.9), (1, 0.1, 3e-3, 0.01, 0.9)]
    pack, models = population(digits, same, traced=("lr", "b1", "weight_decay", "dropout"))
    assert not {"lr", "b1", "1-b1", "weight_decay"} & set(pack.step.shared) and len(pack.step.rates) == 1
    histories = pack.fit()
    for config, history, trained in zip(same, histories, models, strict=True):
        assert_same_training(history, trained, *solo(digits, *config))


def test_population_based_training_copies_the_best_members_weights_inside_the_program(digits):
    """Every epoch, the worst of four (by val_loss) takes on the weights and optimizer state of
    the best, exactly, then trains on with a mutated learning rate of the best's (its own data
    order and dropout keys); the others are untouched."""
    configs = [(k, 0.1, lr, 0.0, 0.9) for k, lr in enumerate((1e-5, 3e-3, 1e-3, 3e-4))]
    pbt = PopulationBasedTraining(
        "val_loss", "min", interval=1, mutations={"lr": Mutation(1e-5, 1e-1, log=True)}, resample_probability=0
    )
    seen = []

    def exploit(population, epoch, records):
        before = [population.step.member_state(k) for k in range(4)]
        made = pbt(population, epoch, records)
        after = [population.step.member_state(k) for k in range(4)]
        rates = [population.step.member_hyperparameters(k)["lr"] for k in range(4)]
        seen.append((records, made, before, after, rates))

    pack, _ = population(digits, configs, traced=pbt.traced, on_epoch_end=exploit)
    pack.fit()
    assert [len(made) for _, made, *_ in seen] == [1, 1, 0]  # after epochs 1 and 2, not after the last
    records, (made,), before, after, rates = seen[0]
    losses_now = {k: r["val_loss"] for k, r in records.items()}
    assert made.member == max(losses_now, key=losses_now.get) and made.epoch == 1
    assert made.source == min(losses_now, key=losses_now.get)
    flat = jax.tree_util.tree_leaves_with_path
    for (path, got), (_, want) in zip(flat(after[made.member]), flat(before[made.source]), strict=True):
        np.testing.assert_array_equal(got, want, err_msg=str(path))  # weights and optimizer state, exactly
    for k in set(range(4)) - {made.member}:
        for (_, got), (_, want) in zip(flat(after[k]), flat(before[k]), strict=True):
            np.testing.assert_array_equal(got, want)
    source_rate = configs[made.source][2]
    assert made.hyperparameters["lr"] in (pytest.approx(0.8 * source_rate), pytest.approx(1.2 * source_rate))
    assert rates[made.member] == pytest.approx(made.hyperparameters["lr"], rel=1e-6)
    assert seen[1][0][made.member]["val_loss"] < losses_now[made.source]  # it trained on from the best weights


class StopAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, record):
        trainer.should_stop = epoch + 1 >= self.epoch


class Ends(Callback):
    def __init__(self):
        self.ended = []

    def on_fit_end(self, trainer):
        self.ended.append(trainer.step)


def test_a_stopped_member_keeps_the_state_it_stopped_with_and_the_others_go_on(digits):
    ends = Ends()
    told = []
    pack, models = population(digits, CONFIGS, callbacks=[[], [StopAfter(1), ends], []])

    def rows():
        return {len(stacked) for stacked in pack.step.params.values()}

    pack.on_member_end = lambda member: told.append(
        (member.index, member.status, member.epoch, pack.step.slots, rows())
    )
    histories = pack.fit()
    assert [m.status for m in pack.members] == ["FINISHED", "STOPPED", "FINISHED"]
    assert told[0] == (1, "STOPPED", 1, [0, 2], {2})  # it left the compiled step: two members train on
    assert sorted(told[1:])[0][:3] == (0, "FINISHED", 3) and sorted(told[1:])[1][:3] == (2, "FINISHED", 3)
    assert ends.ended == [pack.steps_per_epoch]  # its on_fit_end ran when it stopped
    assert_same_training(histories[1], models[1], *solo(digits, *CONFIGS[1], epochs=1))
    for k in (0, 2):
        assert_same_training(histories[k], models[k], *solo(digits, *CONFIGS[k]))


def test_a_member_whose_loss_turns_nan_fails_alone(digits):
    configs = [(0, 0.1, 0.05, 0, 0), (1, 0.1, 1e30, 0, 0), (2, 0.1, 0.1, 0, 0)]  # 1e30: overflows to inf, then NaN
    pack, models = population(digits, configs, callbacks=[[NanGuard(every=2)] for _ in configs], sgd=True)
    histories = pack.fit()
    assert [m.status for m in pack.members] == ["FINISHED", "FAILED", "FINISHED"]
    assert isinstance(pack.members[1].error, NonFiniteLossError)
    assert len(histories[1]) < EPOCHS
    for k in (0, 2):
        seed, dropout, lr, *_ = configs[k]
        trained = model(seed, dropout)
        want = Trainer(
            trained,
            losses.softmax_cross_entropy,
            optim.SGD(lr),
            digits,
            EPOCHS,
            BATCH,
            losses.classification_metrics,
            seed=seed,
        ).fit()
        assert_same_training(histories[k], models[k], want, trained)


def test_when_every_member_fails_the_population_ends_without_error(digits):
    models = [MLP([64, 8, 10], key=k) for k in range(2)]
    pack = PopulationTrainer(
        models,
        losses.softmax_cross_entropy,
        [optim.SGD(1e30), optim.SGD(2e30)],
        digits,
        EPOCHS,
        BATCH,
        losses.classification_metrics,
        seeds=[0, 1],
        callbacks=[[NanGuard(every=2)], [NanGuard(every=2)]],
    )
    assert pack.fit() == [[], []]  # both failed inside their first epoch: no record
    assert [m.status for m in pack.members] == ["FAILED", "FAILED"] and pack.step.slots == []
    assert all(isinstance(m.error, NonFiniteLossError) for m in pack.members)


def test_members_must_share_an_architecture_and_an_optimizer_signature():
    loss = losses.softmax_cross_entropy
    with pytest.raises(ValueError, match=r"member 1 .*not the architecture"):
        PopulationStep([MLP([64, 8, 10]), MLP([64, 16, 10])], loss, [optim.Adam(), optim.Adam()])
    with pytest.raises(ValueError, match=r"member 1 .*not the architecture"):  # dropout 0 has no dropout layer
        PopulationStep([MLP([64, 8, 10], dropout=0.1), MLP([64, 8, 10])], loss, [optim.Adam(), optim.Adam()])
    with pytest.raises(ValueError, match=r"member 1's optimizer .*more than its hyperparameters"):
        PopulationStep([MLP([64, 8, 10]), MLP([64, 8, 10])], loss, [optim.Adam(), optim.SGD(0.1)])
    with pytest.raises(ValueError, match="member 1's optimizer"):
        PopulationStep(
            [MLP([64, 8, 10]), MLP([64, 8, 10])], loss, [optim.SGD(0.1, momentum=0.9), optim.SGD(0.1)]
        )  # no momentum: no velocity slot
    PopulationStep(
        [MLP([64, 8, 10], key=0), MLP([64, 8, 10], key=1)],
        loss,
        [optim.SGD(0.1, momentum=0.9), optim.SGD(0.3, momentum=0.5)],
    )
