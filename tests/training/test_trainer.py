"""The library's training loop and its standard callbacks, without the runner."""

import io

import numpy as np
import pytest

from zkynet import checkpoint, losses, optim
from zkynet.data import Dataset, Split, load_digits
from zkynet.models.fcn import MLP
from zkynet.training import (
    BestCheckpoint,
    Callback,
    Checkpointer,
    EarlyStopping,
    NanGuard,
    NonFiniteLossError,
    ProgressReport,
    Trainer,
)


def mlp_trainer(epochs=2, callbacks=(), seed=0, dataset=None):
    return Trainer(
        MLP([64, 16, 10], key=seed),
        losses.softmax_cross_entropy,
        optim.Adam(1e-3),
        dataset or load_digits(),
        epochs=epochs,
        batch_size=64,
        metrics=losses.classification_metrics,
        seed=seed,
        callbacks=callbacks,
    )


class Poison(Callback):
    """Turns the weights into NaN when epoch `at` starts: training gone bad mid-run."""

    def __init__(self, at):
        self.at = at

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.at:
            for p in trainer.model.named_parameters().values():
                p.value = p.value * np.nan


def test_nan_stops_training_and_the_last_good_checkpoint_stays(tmp_path):
    path = tmp_path / "last.npz"
    checkpointer = Checkpointer(path, every_n_epochs=1)
    trainer = mlp_trainer(epochs=5, callbacks=[Poison(at=2), NanGuard(every=5), checkpointer])
    with pytest.raises(NonFiniteLossError, match="the loss became nan"):
        trainer.fit()
    checkpointer.wait()
    saved = checkpoint.load(path)
    assert int(saved["meta"]["epoch"]) == 2 and int(saved["meta"]["step"]) == 2 * trainer.steps_per_epoch
    assert all(np.isfinite(v).all() for v in saved["params"].values())


class Recorder(Callback):
    def __init__(self, log, name):
        self.log, self.name = log, name

    def on_fit_start(self, trainer):
        self.log.append((self.name, "fit_start"))

    def on_epoch_end(self, trainer, epoch, record):
        self.log.append((self.name, f"epoch {epoch}"))

    def on_checkpoint(self, trainer, path, meta):
        self.log.append((self.name, f"checkpoint {meta['step']}"))

    def on_fit_end(self, trainer):
        self.log.append((self.name, "fit_end"))


def test_callbacks_run_in_order_and_hear_of_each_checkpoint(tmp_path):
    log = []
    checkpointer = Checkpointer(tmp_path / "last.npz")
    trainer = mlp_trainer(epochs=2, callbacks=[Recorder(log, "a"), checkpointer, Recorder(log, "b")])
    trainer.fit()
    checkpointer.wait()
    steps = trainer.steps_per_epoch
    assert [e for e in log if "checkpoint" not in e[1]] == [
        ("a", "fit_start"),
        ("b", "fit_start"),
        ("a", "epoch 0"),
        ("b", "epoch 0"),
        ("a", "epoch 1"),
        ("b", "epoch 1"),
        ("a", "fit_end"),
        ("b", "fit_end"),
    ]
    assert [e for e in log if "checkpoint" in e[1]] == [
        (n, f"checkpoint {s}") for s in (steps, 2 * steps) for n in "ab"
    ]


class StopAfter(Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, trainer, epoch, record):
        trainer.should_stop = epoch + 1 >= self.epochs


def test_a_callback_stops_training_early():
    trainer = mlp_trainer(epochs=10, callbacks=[StopAfter(3)])
    assert [r["epoch"] for r in trainer.fit()] == [1, 2, 3]


class Stoppable:
    should_stop = False


def watched(callback, values, monitor="val_loss"):
    """Feed `callback` epoch records with these values; the epoch after which it stopped, or None."""
    trainer = Stoppable()
    for epoch, value in enumerate(values):
        callback.on_epoch_end(trainer, epoch, {"epoch": epoch + 1, monitor: value, "train_loss": 0.0})
        if trainer.should_stop:
            return epoch + 1
    return None


def test_early_stopping_waits_patience_epochs_for_an_improvement_larger_than_min_delta():
    stopper = EarlyStopping(patience=2)
    assert watched(stopper, [1.0, 0.9, 0.95, 0.91, 0.8]) == 4 and stopper.best_epoch == 2 and stopper.best == 0.9
    assert stopper.stopped_epoch == 4
    stopper = EarlyStopping(patience=2, min_delta=0.05)  # 0.96 is not better than 1.0 by more than 0.05
    assert watched(stopper, [1.0, 0.96, 0.93, 0.9, 0.89]) == 5 and stopper.best_epoch == 3
    maximizer = EarlyStopping("val_accuracy", mode="max", patience=1)
    assert watched(maximizer, [0.5, 0.7, 0.6], "val_accuracy") == 3 and maximizer.best == 0.7
    assert watched(EarlyStopping(patience=3), [3.0, 2.0, 1.0]) is None


def test_early_stopping_refuses_what_it_cannot_watch():
    with pytest.raises(ValueError, match="monitor='val_acc' is not a metric of this run; it has: val_loss, train_loss"):
        watched(EarlyStopping("val_acc"), [1.0])
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'up'"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience must be at least 1, got 0"):
        EarlyStopping(patience=0)


def test_early_stopping_ends_fit_and_the_best_checkpoint_holds_the_best_epoch(tmp_path):
    best = BestCheckpoint(tmp_path / "best.npz", monitor="val_loss")
    stopper = EarlyStopping(monitor="train_loss", patience=1, min_delta=10.0)  # nothing improves by 10
    history = mlp_trainer(epochs=10, callbacks=[best, stopper]).fit()
    assert [r["epoch"] for r in history] == [1, 2] and stopper.stopped_epoch == 2
    losses_ = [r["val_loss"] for r in history]
    assert best.best_epoch == 1 + int(np.argmin(losses_)) and best.best == min(losses_)
    assert int(checkpoint.load(tmp_path / "best.npz")["meta"]["epoch"]) == best.best_epoch


def test_a_restored_trainer_continues_exactly():
    whole = mlp_trainer(epochs=3)
    whole.fit()
    first = mlp_trainer(epochs=1)
    first.fit()
    state = first.state_dict()
    second = mlp_trainer(epochs=3)
    second.load_state_dict(state)
    assert second.step == first.step and [r["epoch"] for r in second.fit()] == [2, 3]
    for name, p in whole.model.named_parameters().items():
        np.testing.assert_array_equal(second.model.named_parameters()[name].value, p.value)
    with pytest.raises(ValueError, match="trained with seed 0, this trainer has seed 1"):
        mlp_trainer(seed=1).load_state_dict(state)


def test_progress_is_one_plain_line_per_epoch_off_a_terminal():
    stream = io.StringIO()
    mlp_trainer(epochs=2, callbacks=[ProgressReport(bar=True, prefix="[t0] ", stream=stream)]).fit()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()
    assert lines[0].startswith("[t0] epoch 1/2: train_acc ") and "val_loss" in lines[1] and "samples/s" in lines[1]


def test_bad_settings_and_bad_data_are_refused_before_training():
    with pytest.raises(ValueError, match="epochs must be at least 1, got 0"):
        mlp_trainer(epochs=0)
    data = load_digits()
    inputs = data.train.inputs.copy()
    inputs[[5, 9], 3] = np.nan
    spoiled = Dataset("spoiled", Split(inputs, data.train.targets), data.validation)
    with pytest.raises(ValueError, match=r"train inputs contain NaN or inf in 2 example\(s\) \(first: row 5\)"):
        mlp_trainer(dataset=spoiled)
