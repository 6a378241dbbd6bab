"""A sweep's worker keeps its trials' compiled steps: a later trial of the same program (another
learning rate, another seed) traces and compiles nothing, and trains to the same bit as a
Trainer of its own."""

import numpy as np

from experiments.sweep import steps
from zkynet import losses, optim
from zkynet.data import load_digits
from zkynet.models.fcn import MLP
from zkynet.training import Trainer


def arguments(digits, lr, seed, decay=0.0, dropout=0.1):
    steps_in_all = 2 * (len(digits.train) // 64)
    return dict(
        model=MLP([64, 32, 10], dropout=dropout, key=seed),
        loss=losses.softmax_cross_entropy,
        optimizer=optim.Adam(optim.Cosine(lr, steps_in_all), weight_decay=decay),
        dataset=digits,
        epochs=2,
        batch_size=64,
        metrics=losses.classification_metrics,
        seed=seed,
    )


def params(trainer):
    return {name: np.asarray(p.value) for name, p in trainer.model.named_parameters().items()}


def test_a_later_trial_of_the_same_program_reuses_it_and_trains_as_a_trainer_would(runner):
    digits = load_digits()
    programs = steps.Programs()
    cfg = runner.config("optimizer.lr=1e-3", "seed=0")
    trials = [(1e-3, 0, 0.0), (3e-3, 1, 0.0), (3e-3, 1, 0.01)]  # the third: weight decay is other code than 0
    for lr, seed, decay in trials:
        made = steps.trainer_maker(programs, runner.config(f"optimizer.lr={lr}", f"seed={seed}"))(
            **arguments(digits, lr, seed, decay)
        )
        alone = Trainer(**arguments(digits, lr, seed, decay))
        got, want = made.fit(), alone.fit()
        assert [r["val_loss"] for r in got] == [r["val_loss"] for r in want]
        for name, value in params(alone).items():
            np.testing.assert_array_equal(params(made)[name], value)
    assert programs.reused == 1 and len(programs.train) == 2  # the second trial ran the first's program
    assert steps.key_of(cfg) == steps.key_of(runner.config("optimizer.lr=0.5", "seed=7"))
    assert steps.key_of(cfg) != steps.key_of(runner.config("model.widths=[64,16,10]"))
