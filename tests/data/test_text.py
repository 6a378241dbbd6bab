"""The text corpus and its tokenizer (zkynet/data/text.py)."""

import numpy as np
import pytest

from zkynet.data.text import CharTokenizer, bigram_cross_entropy, load_text, read_corpus


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
