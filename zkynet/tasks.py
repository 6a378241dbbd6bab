"""Tasks: what a model is trained to do, declared once.

A Task holds the loss (on graph nodes, so back() differentiates it with the
model), the metrics (on arrays), where the targets come from (the dataset's
targets, or the inputs themselves for autoencoders), the metric a run is
judged by and whether it is minimized or maximized, and the names of the
pictures or samples worth keeping after training (which the experiment runner
draws). Choose one by name (`tasks.get("classification")`) or build your own.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zkynet import losses
from zkynet.data import Dataset, Split
from zkynet.models.autoencoder import vae_loss

MODES = ("min", "max")


@dataclass(frozen=True)
class Task:
    name: str
    loss: Callable  # loss(model outputs, targets) -> scalar node
    metrics: Callable | None = None  # metrics(output arrays..., targets) -> {name: array}
    targets_are_inputs: bool = False  # self-supervised: reconstruct the inputs
    objective: str = "val_loss"  # the epoch metric that ranks runs and that sweeps optimize
    mode: str = "min"  # "min" or "max": which way the objective improves
    artifacts: tuple = ()  # what to draw after training: "text_sample", "decoded_samples", "reconstructions"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"task {self.name}: mode must be 'min' or 'max', got {self.mode!r}")

    def data(self, dataset: Dataset) -> Dataset:
        """`dataset` as this task trains on it (targets replaced by the inputs when
        self-supervised)."""
        if not self.targets_are_inputs:
            return dataset
        return dataclasses.replace(
            dataset,
            train=Split(dataset.train.inputs, dataset.train.inputs),
            validation=Split(dataset.validation.inputs, dataset.validation.inputs),
            test=None if dataset.test is None else Split(dataset.test.inputs, dataset.test.inputs),
        )

    def improved(self, new: float, best: float | None) -> bool:
        """Whether objective value `new` is better than `best` (None: nothing yet)."""
        return best is None or (new < best if self.mode == "min" else new > best)


TASKS: dict[str, dict[str, Any]] = {
    "classification": dict(loss=losses.softmax_cross_entropy, metrics=losses.classification_metrics),
    "regression": dict(loss=losses.mse),
    "language_model": dict(
        loss=losses.softmax_cross_entropy, metrics=losses.classification_metrics, artifacts=("text_sample",)
    ),  # per-token classification of the next token
    "reconstruction": dict(loss=losses.mse, targets_are_inputs=True, artifacts=("reconstructions",)),
    "vae": dict(loss=vae_loss, targets_are_inputs=True, artifacts=("decoded_samples",)),  # the negative ELBO
}


def get(name: str, objective: str = "val_loss", mode: str = "min") -> Task:
    """The task called `name`, judged by `objective` in direction `mode`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return Task(name, objective=objective, mode=mode, **TASKS[name])
