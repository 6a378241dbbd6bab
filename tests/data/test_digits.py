"""The embedded digits dataset (zkynet/data/digits.py)."""

import numpy as np

from zkynet.data import load_digits
from zkynet.data.dataset import split_rows


def test_digits_is_real_and_split_is_fixed():
    flat, images = load_digits(), load_digits("image")
    assert (len(flat.train), len(flat.validation)) == (1438, 359)
    assert flat.input_shape == (64,) and images.input_shape == (1, 8, 8)
    assert flat.num_classes == 10 and set(np.unique(flat.train.targets)) == set(range(10))
    assert flat.train.inputs.min() >= 0.0 and flat.train.inputs.max() <= 1.0
    np.testing.assert_array_equal(flat.validation.targets, load_digits().validation.targets)
    np.testing.assert_array_equal(images.train.inputs.reshape(-1, 64), flat.train.inputs)


def test_shipped_digits_are_scikit_learns_digits():
    from sklearn.datasets import load_digits as sklearn_digits  # the test extra has it; zkynet does not need it

    reference = sklearn_digits()
    shipped = load_digits()
    inputs = np.concatenate([shipped.train.inputs, shipped.validation.inputs])
    labels = np.concatenate([shipped.train.targets, shipped.validation.targets])
    order = np.concatenate(split_rows(len(reference.target)))
    np.testing.assert_array_equal(inputs, (reference.data[order] / 16.0).astype(np.float32))
    np.testing.assert_array_equal(labels, reference.target[order])
