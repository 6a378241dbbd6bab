"""Batches and the embedded digits dataset."""

import numpy as np
import pytest

from zkynet.data import Batches, Split, load_digits
from zkynet.data.dataset import split_rows


def split(n=10):
    return Split(np.arange(n * 2, dtype=np.float32).reshape(n, 2), np.arange(n))


def test_every_example_once_per_epoch_and_seeded_order():
    batches = Batches(split(10), batch_size=3, seed=7)
    assert len(batches) == 4
    epoch0 = [np.asarray(t) for _, t in batches.epoch(0)]
    assert [len(t) for t in epoch0] == [3, 3, 3, 1]
    assert sorted(np.concatenate(epoch0)) == list(range(10))
    again = [np.asarray(t) for _, t in Batches(split(10), batch_size=3, seed=7).epoch(0)]
    assert all(np.array_equal(a, b) for a, b in zip(epoch0, again, strict=True))
    epoch1 = np.concatenate([np.asarray(t) for _, t in batches.epoch(1)])
    assert not np.array_equal(np.concatenate(epoch0), epoch1)


def test_inputs_stay_paired_with_targets():
    for x, y in Batches(split(10), batch_size=4, seed=1).epoch(0):
        np.testing.assert_array_equal(np.asarray(x)[:, 0], 2 * np.asarray(y))


def test_drop_last_start_and_no_shuffle():
    batches = Batches(split(10), batch_size=3, drop_last=True, shuffle=False)
    assert len(batches) == 3
    targets = [np.asarray(t).tolist() for _, t in batches.epoch(0, start=1)]
    assert targets == [[3, 4, 5], [6, 7, 8]]


def test_bad_settings():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Batches(split(), 0)
    with pytest.raises(ValueError, match="no full batch"):
        Batches(split(3), 4, drop_last=True)
    with pytest.raises(ValueError, match="10 inputs but 9 targets"):
        Split(np.zeros((10, 2)), np.zeros(9))


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
