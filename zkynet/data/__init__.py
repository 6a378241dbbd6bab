"""Datasets and mini-batches. Embedded defaults need no download."""

from zkynet.data.batches import Batches
from zkynet.data.dataset import Dataset, Split
from zkynet.data.digits import load_digits
from zkynet.data.downloaded import (
    DatasetFileError,
    DatasetNotFoundError,
    load_boston,
    load_feedback,
    load_mnist,
    load_ravdess,
    load_sign_mnist,
)

__all__ = [
    "Batches",
    "Dataset",
    "DatasetFileError",
    "DatasetNotFoundError",
    "Split",
    "load_boston",
    "load_digits",
    "load_feedback",
    "load_mnist",
    "load_ravdess",
    "load_sign_mnist",
]
