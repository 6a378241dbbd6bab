"""Loaders for the seed's Kaggle datasets, in the formats download_datasets.sh
leaves under `datasets/` (or any `root`):

  mnist/       mnist_train.csv, mnist_test.csv           (oddrationale/mnist-in-csv)
  sign_mnist/  sign_mnist_train.csv, sign_mnist_test.csv (datamunge/sign-language-mnist)
  boston/      HousingData.csv                           (altavish/boston-housing-dataset)
  ravdess/     Actor_01/03-01-05-01-02-01-01.wav ...     (uwrfkaggler/ravdess-emotional-speech-audio)
  feedback/    train.csv                                 (competition feedback-prize-2021)

A missing file raises DatasetNotFoundError naming the script to run and the path
it expected; a file that cannot be read (cut short, not CSV, wrong columns)
raises DatasetFileError naming the file.
"""

import collections
import re
import wave
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from zkynet.data.dataset import Dataset, Split, split_rows

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "datasets"


class DatasetNotFoundError(FileNotFoundError):
    pass


class DatasetFileError(ValueError):
    pass


@contextmanager
def reading(path, dataset):
    """Any failure to read or interpret `path` becomes a DatasetFileError naming it:
    pandas' and wave's own errors never say which file they were reading."""
    try:
        yield
    except (DatasetNotFoundError, ImportError):
        raise
    except Exception as e:
        raise DatasetFileError(
            f"{dataset}: cannot read {path} ({type(e).__name__}: {e}); the file may be "
            f"cut short or not the expected one: download it again with "
            f"`./download_datasets.sh {dataset}`"
        ) from e


def require(path, dataset):
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(
            f"{dataset} not found: expected {path}. Download it with `./download_datasets.sh {dataset}` "
            f"(needs the Kaggle CLI and an API token), or give the folder that holds {dataset}/ as root "
            f"(dataset.loader.root=... on the command line)."
        )
    return path


def _root(root):
    return Path(root) if root is not None else DEFAULT_ROOT


def _read_csv(path):
    try:
        import pandas as pd  # only these loaders need it: not a dependency of the library
    except ImportError:
        raise ImportError(
            f"reading {path} needs pandas: pip install pandas (or zkynet[experiments], which has it)"
        ) from None
    return pd.read_csv(path)


def _images(frame, layout):
    """28x28 grey images from a Kaggle MNIST-style CSV (label column first)."""
    pixels = frame.drop(columns=frame.columns[0]).to_numpy(np.float32) / 255.0
    return pixels if layout == "flat" else pixels.reshape(-1, 1, 28, 28)


def _pixel_csvs(name, train_file, test_file, root, layout):
    folder = _root(root) / name
    splits = []
    for file in (train_file, test_file):
        path = require(folder / file, name)
        with reading(path, name):
            frame = _read_csv(path)
            if frame.shape[1] != 1 + 28 * 28:
                raise ValueError(f"{frame.shape[1]} columns, expected a label and 784 pixels")
            splits.append(Split(_images(frame, layout), frame.iloc[:, 0].to_numpy(np.int32)))
    train, validation = splits  # the download's test file is the validation split
    num_classes = int(max(split.targets.max() for split in splits)) + 1
    return Dataset(name, train, validation, num_classes=num_classes)


def load_mnist(root=None, layout="flat"):
    """MNIST from CSV (label, 784 pixels per row): 60,000 train / 10,000 test."""
    return _pixel_csvs("mnist", "mnist_train.csv", "mnist_test.csv", root, layout)


def load_sign_mnist(root=None, layout="flat"):
    """Sign-language MNIST: 28x28 hand signs for the letters; labels 0-24 (J and Z,
    which need motion, are absent)."""
    return _pixel_csvs("sign_mnist", "sign_mnist_train.csv", "sign_mnist_test.csv", root, layout)


def load_boston(root=None, layout="flat"):
    """Boston housing regression: 13 features -> median value (MEDV, in $1000s), shaped
    (N, 1). Missing values become the training mean; features are standardized
    with training statistics."""
    path = require(_root(root) / "boston" / "HousingData.csv", "boston")
    with reading(path, "boston"):
        frame = _read_csv(path)
        features = frame.drop(columns=["MEDV"]).to_numpy(np.float64)
        target = frame["MEDV"].to_numpy(np.float32)[:, None]
    train, validation = split_rows(len(frame))
    mean = np.nanmean(features[train], axis=0)
    features = np.where(np.isnan(features), mean, features)
    std = features[train].std(axis=0) + 1e-8
    features = ((features - mean) / std).astype(np.float32)
    return Dataset(
        "boston",
        Split(features[train], target[train]),
        Split(features[validation], target[validation]),
        info={"features": list(frame.columns[:-1])},
    )


RAVDESS_EMOTIONS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def spectrogram(samples, rate, size=64, seconds=3.0, frame=1024):
    """A (size, size) log-magnitude spectrogram of the first `seconds` (zero-padded):
    `size` frames, and the frame // 2 frequency bins averaged down to `size` bands
    (size must divide frame // 2)."""
    samples = np.pad(samples[: int(seconds * rate)], (0, max(0, int(seconds * rate) - len(samples))))
    hop = max(1, (len(samples) - frame) // (size - 1))
    frames = np.stack([samples[i * hop : i * hop + frame] for i in range(size)])
    magnitude = np.abs(np.fft.rfft(frames * np.hanning(frame), axis=1))[:, : frame // 2]
    bands = magnitude.reshape(size, size, -1).mean(axis=2)
    return np.log1p(bands).T.astype(np.float32)  # (frequency, time)


def read_wav(path):
    """Samples in [-1, 1] (channels averaged) and the sample rate of a PCM WAV file."""
    with wave.open(str(path)) as f:
        width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
        raw = f.readframes(f.getnframes())
    if width == 1:
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width in (2, 4):
        dtype = np.int16 if width == 2 else np.int32
        samples = np.frombuffer(raw, dtype).astype(np.float32) / np.iinfo(dtype).max
    else:
        raise ValueError(f"{path}: unsupported {8 * width}-bit WAV")
    return samples.reshape(-1, channels).mean(axis=1), rate


def load_ravdess(root=None, layout="image", validation_actors=(21, 22, 23, 24)):
    """RAVDESS emotional speech: each WAV becomes a 64x64 log spectrogram, labelled with
    one of 8 emotions (the third field of the file name). Split by speaker: actors
    21-24 are held out."""
    folder = require(_root(root) / "ravdess", "ravdess")
    files = sorted(folder.glob("Actor_*/*.wav"))
    if not files:
        raise DatasetNotFoundError(
            f"ravdess: no Actor_*/*.wav files under {folder}; run `./download_datasets.sh ravdess`"
        )
    spectrograms, emotions, actors = [], [], []
    for path in files:
        with reading(path, "ravdess"):
            fields = path.stem.split("-")
            spectrograms.append(spectrogram(*read_wav(path)))
            emotions.append(int(fields[2]) - 1)
            actors.append(int(fields[6]))
    stacked = np.stack(spectrograms)
    features = stacked[:, None] if layout == "image" else stacked.reshape(len(files), -1)
    labels, held_out = np.array(emotions, np.int32), np.isin(actors, validation_actors)
    return Dataset(
        "ravdess",
        Split(features[~held_out], labels[~held_out]),
        Split(features[held_out], labels[held_out]),
        num_classes=len(RAVDESS_EMOTIONS),
        info={"classes": RAVDESS_EMOTIONS},
    )


def tokenize(texts, level):
    return [list(t) if level == "char" else re.findall(r"\w+|[^\w\s]", t.lower()) for t in texts]


def build_vocabulary(token_lists, max_size):
    """["<pad>", "<unk>", most frequent tokens...]."""
    counts = collections.Counter(token for tokens in token_lists for token in tokens)
    return ["<pad>", "<unk>"] + [t for t, _ in counts.most_common(max_size - 2)]


def encode(token_lists, vocabulary, length):
    index = {t: i for i, t in enumerate(vocabulary)}
    out = np.zeros((len(token_lists), length), np.int32)
    for row, tokens in enumerate(token_lists):
        ids = [index.get(t, 1) for t in tokens[:length]]
        out[row, : len(ids)] = ids
    return out


def load_feedback(root=None, layout="tokens", level="char", max_length=256, vocabulary_size=20000):
    """Feedback Prize 2021: classify each discourse element's text into its type (Lead,
    Position, Claim, ...). Texts become `level` ("char" or "word") token ids, padded
    or cut to `max_length`; the vocabulary (from the training split) is in
    info["vocabulary"]. Split by essay, so no essay is in both."""
    path = require(_root(root) / "feedback" / "train.csv", "feedback")
    with reading(path, "feedback"):
        frame = _read_csv(path)
        frame = frame[["id", "discourse_text", "discourse_type"]]
    classes = sorted(frame["discourse_type"].unique())
    essays = np.array(sorted(frame["id"].unique()))
    train_essays, _ = split_rows(len(essays))
    in_train = frame["id"].isin(essays[train_essays]).to_numpy()
    tokens = tokenize(frame["discourse_text"].astype(str).tolist(), level)
    vocabulary = build_vocabulary([t for t, keep in zip(tokens, in_train, strict=True) if keep], vocabulary_size)
    ids = encode(tokens, vocabulary, max_length)
    labels = frame["discourse_type"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int32)
    return Dataset(
        "feedback",
        Split(ids[in_train], labels[in_train]),
        Split(ids[~in_train], labels[~in_train]),
        num_classes=len(classes),
        info={"classes": classes, "vocabulary": vocabulary, "level": level},
    )
