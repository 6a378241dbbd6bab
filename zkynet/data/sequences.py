"""Synthetic algorithmic sequence tasks, generated from a seed (no download), in
language-model form: the model reads a token sequence and predicts the next token
at every position; only the answer's positions count (other targets are -1, the
"ignore" label of zkynet.losses).

  copy:      a1 .. aL = a1 .. aL
  reverse:   a1 .. aL = aL .. a1
  addition:  x + y = (x + y), digits of the sum least significant first
"""

import numpy as np

from zkynet.data.dataset import Dataset, Split

PAD, SEPARATOR = 0, 1
DIGITS = [str(d) for d in range(10)]


def _language_model_split(sequences, answer_start):
    """(inputs, targets) for next-token prediction, targets before the answer ignored."""
    inputs, targets = sequences[:, :-1], sequences[:, 1:].copy()
    targets[:, : answer_start - 1] = -1
    return Split(inputs.astype(np.int32), targets.astype(np.int32))


def _symbol_task(name, transform, length, symbols, train_size, validation_size, seed):
    rng = np.random.default_rng(seed)
    total = train_size + validation_size
    source = rng.integers(2, 2 + symbols, size=(total, length))
    sequences = np.concatenate([source, np.full((total, 1), SEPARATOR), transform(source)], axis=1)
    vocabulary = ["<pad>", "="] + [chr(ord("a") + i) for i in range(symbols)]
    return Dataset(
        name,
        _language_model_split(sequences[:train_size], length + 1),
        _language_model_split(sequences[train_size:], length + 1),
        num_classes=len(vocabulary),
        info={"vocabulary": vocabulary, "answer_start": length + 1},
    )


def load_copy(length=8, symbols=8, train_size=8000, validation_size=1000, seed=0, layout="tokens"):
    return _symbol_task("copy", lambda s: s, length, symbols, train_size, validation_size, seed)


def load_reverse(length=8, symbols=8, train_size=8000, validation_size=1000, seed=0, layout="tokens"):
    return _symbol_task("reverse", lambda s: s[:, ::-1], length, symbols, train_size, validation_size, seed)


def load_addition(digits=3, train_size=20000, validation_size=2000, seed=0, layout="tokens"):
    """x + y with `digits`-digit operands (zero-padded); the sum has digits + 1 digits,
    written least significant first (the order in which carries are computed)."""
    rng = np.random.default_rng(seed)
    total = train_size + validation_size
    x, y = rng.integers(0, 10**digits, size=(2, total))
    vocabulary = ["<pad>", "="] + DIGITS + ["+"]
    plus = vocabulary.index("+")

    def spell(numbers, width):
        return np.stack([(numbers // 10**p) % 10 + 2 for p in range(width)], axis=1)  # least significant first

    sequences = np.concatenate(
        [
            spell(x, digits)[:, ::-1],
            np.full((total, 1), plus),
            spell(y, digits)[:, ::-1],
            np.full((total, 1), SEPARATOR),
            spell(x + y, digits + 1),
        ],
        axis=1,
    )
    answer_start = 2 * digits + 2
    return Dataset(
        "addition",
        _language_model_split(sequences[:train_size], answer_start),
        _language_model_split(sequences[train_size:], answer_start),
        num_classes=len(vocabulary),
        info={"vocabulary": vocabulary, "answer_start": answer_start},
    )


def decode(tokens, vocabulary):
    return "".join(vocabulary[t] for t in tokens if t != PAD)
