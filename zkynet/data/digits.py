"""Handwritten digits, shipped with zkynet: 1,797 real 8x8 images of the digits
0-9 (the UCI "Optical Recognition of Handwritten Digits" test set, CC BY 4.0,
the same array scikit-learn ships as `load_digits`), so nothing is downloaded.
The train/validation split is fixed."""

from pathlib import Path

import numpy as np

from zkynet.data.dataset import Dataset, Split, split_rows

FILE = Path(__file__).with_name("digits.npz")  # pixels (1797, 8, 8) uint8 in 0..16, labels (1797,) uint8


def load_digits(layout="flat"):
    """Digits scaled to [0, 1]: inputs (N, 64) for layout "flat", images (N, 1, 8, 8)
    for "image"; integer labels 0-9; 1,438 train and 359 validation examples."""
    if layout not in ("flat", "image"):
        raise ValueError(f"digits come as layout 'flat' or 'image', not {layout!r}")
    with np.load(FILE) as data:
        pixels, labels = data["pixels"], data["labels"].astype(np.int32)
    images = (pixels / np.float32(16)).astype(np.float32)
    images = images.reshape(-1, 1, 8, 8) if layout == "image" else images.reshape(len(images), -1)
    train, validation = split_rows(len(labels))
    return Dataset(
        "digits", Split(images[train], labels[train]), Split(images[validation], labels[validation]), num_classes=10
    )
