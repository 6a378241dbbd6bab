"""Synthetic sequence tasks (zkynet/data/sequences.py)."""

import numpy as np

from zkynet.data.sequences import decode, load_addition, load_copy, load_reverse


def test_copy_and_reverse_format():
    for loader, transform in [(load_copy, lambda a: a), (load_reverse, lambda a: a[::-1])]:
        data = loader(length=5, symbols=4, train_size=20, validation_size=5, seed=3)
        sequence = np.concatenate([data.train.inputs[0], data.train.targets[0][-1:]])
        first, second = sequence[:5], sequence[6:]
        assert sequence[5] == 1 and np.array_equal(second, transform(first))
        # targets[t] is token t + 1: the prompt and the separator are ignored, the answer counts
        assert (data.train.targets[:, :5] == -1).all() and (data.train.targets[:, 5:] >= 2).all()
    assert not np.array_equal(load_copy(seed=0).train.inputs, load_copy(seed=1).train.inputs)


def test_addition_sums_are_right():
    data = load_addition(digits=3, train_size=50, validation_size=10)
    vocabulary, start = data.info["vocabulary"], data.info["answer_start"]
    for inputs, targets in zip(data.train.inputs, data.train.targets, strict=True):
        x, y = decode(inputs[: start - 1], vocabulary).split("+")
        answer = decode(targets[start - 1 :], vocabulary)[::-1]
        assert int(answer) == int(x) + int(y)
