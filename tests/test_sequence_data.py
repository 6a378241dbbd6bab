"""Synthetic sequence tasks, the text corpus and its tokenizer."""

import numpy as np
import pytest

from zkynet.data.sequences import decode, load_addition, load_copy, load_reverse
from zkynet.data.text import CharTokenizer, bigram_cross_entropy, load_text, read_corpus


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


def test_tokenizer_round_trip_and_json():
    tokenizer = CharTokenizer.printable()
    text = "def f(x):\n\treturn x + 1  # ok"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode(tokenizer.encode("naïve")) == "na?ve"  # outside the vocabulary: <unk>
    again = CharTokenizer.from_json(tokenizer.to_json())
    assert again.vocabulary == tokenizer.vocabulary and len(again) == 99


def test_text_corpus_from_the_standard_library_and_from_a_path(tmp_path):
    data = load_text(length=32, max_chars=20_000)
    assert data.train.inputs.shape[1] == 32 and np.array_equal(data.train.inputs[0, 1:], data.train.targets[0, :-1])
    assert "import" in data.info["tokenizer"].decode(data.train.inputs[:50])
    (tmp_path / "notes.txt").write_text("abcabcabc" * 100)
    mine = load_text(tmp_path, length=8)
    assert mine.info["tokenizer"].decode(mine.train.inputs[0]) in ("abcabcab", "bcabcabc", "cabcabca")
    # perfectly predictable text: far below the 4.6 nats of guessing among 99 symbols (not 0: the
    # add-one smoothing keeps some probability on all 99 successors of each of a few hundred characters)
    assert bigram_cross_entropy(mine.train, mine.validation, mine.num_classes) < 0.1 * np.log(99)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_corpus(tmp_path / "nope")
