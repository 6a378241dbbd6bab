"""A character-level text corpus from files already on the machine: by default the
Python standard library's own source code (real text, no download), or any
folder/file given. Characters are printable ASCII plus newline and tab; anything
else reads as <unk>."""

import json
import string
import sysconfig
from pathlib import Path

import numpy as np

from zkynet.data.dataset import Dataset, Split


class CharTokenizer:
    """Characters <-> ids; id 0 is padding, id 1 <unk>. Saved with a model as JSON."""

    def __init__(self, characters):
        self.vocabulary = ["<pad>", "<unk>"] + [c for c in characters if c not in ("<pad>", "<unk>")]
        self.index = {c: i for i, c in enumerate(self.vocabulary)}

    @classmethod
    def printable(cls):
        return cls(sorted(set(string.printable) - set("\r\x0b\x0c")))

    def __len__(self):
        return len(self.vocabulary)

    def encode(self, text):
        return np.array([self.index.get(c, 1) for c in text], np.int32)

    def decode(self, ids):
        return "".join(self.vocabulary[i] if i > 1 else ("" if i == 0 else "?") for i in np.asarray(ids).ravel())

    def to_json(self):
        return json.dumps({"vocabulary": self.vocabulary})

    @classmethod
    def from_json(cls, text):
        return cls(json.loads(text)["vocabulary"][2:])


def python_sources():
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def read_corpus(path=None, max_chars=1_000_000):
    """Text of `path` (a file, or every *.py/*.txt/*.md file in a folder), by default the
    standard library's top-level modules, up to `max_chars` characters."""
    if path is None:
        files = python_sources()
    else:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"text corpus {path} does not exist")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".py", ".txt", ".md"))
    chunks, total = [], 0
    for file in files:
        text = file.read_text(errors="replace")
        chunks.append(text)
        total += len(text)
        if total >= max_chars:
            break
    if not chunks:
        raise FileNotFoundError(f"no text files found in {path}")
    return "".join(chunks)[:max_chars]


def load_text(path=None, length=128, max_chars=1_000_000, validation_fraction=0.1, layout="tokens"):
    """Windows of `length` characters (inputs) and the same shifted by one (targets).
    The last `validation_fraction` of the text is the validation split."""
    tokenizer = CharTokenizer.printable()
    ids = tokenizer.encode(read_corpus(path, max_chars))
    cut = int(len(ids) * (1 - validation_fraction))

    def windows(part):
        count = (len(part) - 1) // length
        inputs = part[: count * length].reshape(count, length)
        targets = part[1 : count * length + 1].reshape(count, length)
        return Split(inputs, targets)

    return Dataset(
        "text",
        windows(ids[:cut]),
        windows(ids[cut:]),
        num_classes=len(tokenizer),
        info={"tokenizer": tokenizer, "vocabulary": tokenizer.vocabulary},
    )


def bigram_cross_entropy(train, validation, vocabulary_size):
    """Validation loss (nats per character) of an add-one-smoothed bigram model fitted
    on the training split: the baseline a character LM must beat."""
    counts = np.ones((vocabulary_size, vocabulary_size))
    np.add.at(counts, (train.inputs.ravel(), train.targets.ravel()), 1)
    log_probs = np.log(counts / counts.sum(axis=1, keepdims=True))
    return float(-log_probs[validation.inputs.ravel(), validation.targets.ravel()].mean())
