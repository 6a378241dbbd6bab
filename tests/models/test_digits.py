"""The MLP and the CNN really learn: real digits, seeded, CPU budget of seconds."""

import pytest

from zkynet import losses, optim
from zkynet.data import load_digits
from zkynet.models.cnn import LeNet
from zkynet.models.fcn import MLP
from zkynet.training import Trainer

EPOCHS, BATCH = 20, 64


def train(model, dataset, lr):
    steps = EPOCHS * (len(dataset.train) // BATCH)
    trainer = Trainer(
        model,
        losses.softmax_cross_entropy,
        optim.Adam(optim.Cosine(lr, steps)),
        dataset,
        epochs=EPOCHS,
        batch_size=BATCH,
        metrics=losses.classification_metrics,
        seed=0,
    )
    return trainer.fit()


@pytest.mark.slow
def test_mlp_reaches_97_percent_on_digits():
    history = train(MLP([64, 256, 256, 10], key=0), load_digits(), 1e-3)
    assert history[-1]["val_accuracy"] >= 0.97
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 10


@pytest.mark.slow
def test_cnn_reaches_98_percent_on_digits():
    history = train(LeNet((1, 8, 8), channels=(16, 32), hidden=(64,), key=0), load_digits("image"), 3e-3)
    assert history[-1]["val_accuracy"] >= 0.98
