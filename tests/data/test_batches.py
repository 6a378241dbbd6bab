"""Batches (zkynet/data/batches.py) over a Split (zkynet/data/dataset.py)."""

import numpy as np
import pytest

from zkynet.data import Batches, Split


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
