"""The handwritten digits shipped inside scikit-learn: 1,797 real 8x8 images of
the digits 0-9, no download. The train/validation split is fixed."""
import numpy as np

from zkynet.data.dataset import Dataset, Split, split_rows


def load_digits(layout="flat"):
    """Digits scaled to [0, 1]: inputs (N, 64) for layout "flat", images (N, 1, 8, 8)
    for "image"; integer labels 0-9; 1,438 train and 359 validation examples."""
    if layout not in ("flat", "image"):
        raise ValueError(f"digits come as layout 'flat' or 'image', not {layout!r}")
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = (digits.data / 16.0).astype(np.float32)
    if layout == "image":
        images = images.reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.int32)
    train, validation = split_rows(len(labels))
    return Dataset("digits", Split(images[train], labels[train]),
                   Split(images[validation], labels[validation]), num_classes=10)
