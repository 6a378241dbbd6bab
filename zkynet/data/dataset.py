"""A dataset: train, validation and (optionally) test splits of (inputs, targets)
arrays (NumPy arrays, or arrays read from files as needed: zkynet.data.mapped)."""

from dataclasses import dataclass, field

import numpy as np

SPLIT_SEED = 0  # fixed, so every run and every user sees the same split


def split_rows(count, validation_fraction=0.2):
    """(train rows, validation rows): a fixed random split of range(count)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(count)
    cut = count - round(validation_fraction * count)
    return order[:cut], order[cut:]


@dataclass(frozen=True)
class Split:
    inputs: np.ndarray
    targets: np.ndarray

    def __post_init__(self):
        if len(self.inputs) != len(self.targets):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.targets)} targets")

    def __len__(self):
        return len(self.inputs)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    validation: Split
    num_classes: int = 0  # 0: regression or sequence targets
    info: dict = field(default_factory=dict)  # e.g. a tokenizer's vocabulary
    test: Split | None = None  # evaluated once, after training (never for choosing)

    @property
    def input_shape(self):
        return tuple(self.train.inputs.shape[1:])

    def __str__(self):
        return (
            f"{self.name}: {len(self.train)} train / {len(self.validation)} validation"
            + (f" / {len(self.test)} test" if self.test is not None else "")
            + ", "
            f"inputs {self.input_shape}" + (f", {self.num_classes} classes" if self.num_classes else "")
        )
