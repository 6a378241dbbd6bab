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
from zkynet.data.files import load_csv, load_npy, load_npz
from zkynet.data.mapped import MappedArray

__all__ = [
    "Batches",
    "Dataset",
    "DatasetFileError",
    "DatasetNotFoundError",
    "MappedArray",
    "Split",
    "load_boston",
    "load_csv",
    "load_digits",
    "load_feedback",
    "load_mnist",
    "load_npy",
    "load_npz",
    "load_ravdess",
    "load_sign_mnist",
]
