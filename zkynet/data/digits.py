"""The handwritten digits shipped inside scikit-learn: 1,797 real 8x8 images of
the digits 0-9, no download. The train/validation split is fixed."""
import numpy as np

from zkynet.data.dataset import Dataset, Split

VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0  # fixed, so every run and every user sees the same split


def load_digits(flat=True):
    """Digits scaled to [0, 1]: inputs (N, 64) if `flat`, else images (N, 1, 8, 8);
    integer labels 0-9; 1,438 train and 359 validation examples."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = (digits.data / 16.0).astype(np.float32)
    if not flat:
        images = images.reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    cut = len(labels) - int(round(VALIDATION_FRACTION * len(labels)))
    train, validation = order[:cut], order[cut:]
    return Dataset("digits", Split(images[train], labels[train]),
                   Split(images[validation], labels[validation]), num_classes=10)
