"""Datasets and mini-batches. Embedded defaults need no download."""
from zkynet.data.batches import Batches
from zkynet.data.dataset import Dataset, Split
from zkynet.data.digits import load_digits

__all__ = ["Batches", "Dataset", "Split", "load_digits"]
