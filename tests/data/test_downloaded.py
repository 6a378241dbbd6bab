"""The downloaded-dataset loaders, on small files the tests write in Kaggle's formats."""

import wave

import numpy as np
import pandas as pd
import pytest

from zkynet.data import DatasetNotFoundError, load_boston, load_feedback, load_mnist, load_ravdess, load_sign_mnist

rng = np.random.default_rng(0)


def pixel_csv(path, header, labels):
    pixels = rng.integers(0, 256, size=(len(labels), 784))
    frame = pd.DataFrame(np.column_stack([labels, pixels]), columns=["label"] + header)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return pixels


def test_mnist_csv(tmp_path):
    header = [f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)]
    pixels = pixel_csv(tmp_path / "mnist" / "mnist_train.csv", header, [3, 1, 4, 1, 5])
    pixel_csv(tmp_path / "mnist" / "mnist_test.csv", header, [9, 2])
    flat, images = load_mnist(tmp_path), load_mnist(tmp_path, layout="image")
    assert flat.train.inputs.shape == (5, 784) and images.train.inputs.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(flat.train.inputs[0], pixels[0] / 255.0, rtol=1e-6)
    assert flat.train.targets.tolist() == [3, 1, 4, 1, 5] and flat.num_classes == 10


def test_sign_mnist_csv(tmp_path):
    header = [f"pixel{i}" for i in range(1, 785)]
    pixel_csv(tmp_path / "sign_mnist" / "sign_mnist_train.csv", header, [0, 24, 10])
    pixel_csv(tmp_path / "sign_mnist" / "sign_mnist_test.csv", header, [3])
    data = load_sign_mnist(tmp_path)
    assert data.num_classes == 25 and data.validation.targets.tolist() == [3]


def test_boston_csv_with_missing_values(tmp_path):
    columns = ["CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT"]
    frame = pd.DataFrame(rng.normal(size=(20, 13)), columns=columns)
    frame.loc[3, "CRIM"] = np.nan
    frame["MEDV"] = rng.uniform(10, 50, size=20)
    (tmp_path / "boston").mkdir()
    frame.to_csv(tmp_path / "boston" / "HousingData.csv", index=False, na_rep="NA")
    data = load_boston(tmp_path)
    assert data.train.inputs.shape == (16, 13) and data.train.targets.shape == (16, 1)
    assert np.isfinite(data.train.inputs).all() and np.isfinite(data.validation.inputs).all()
    np.testing.assert_allclose(data.train.inputs.mean(axis=0), 0, atol=1e-5)


def write_wav(path, seconds=0.5, rate=16000, frequency=440.0):
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * frequency * t) * 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())


def test_ravdess_wavs_become_spectrograms_split_by_actor(tmp_path):
    for actor, emotion in [(1, 5), (2, 3), (21, 8), (24, 1)]:
        write_wav(
            tmp_path / "ravdess" / f"Actor_{actor:02d}" / f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav",
            frequency=200.0 * emotion,
        )
    data = load_ravdess(tmp_path)
    assert data.train.inputs.shape == (2, 1, 64, 64) and data.validation.inputs.shape == (2, 1, 64, 64)
    assert sorted(data.train.targets.tolist()) == [2, 4] and sorted(data.validation.targets.tolist()) == [0, 7]
    assert data.num_classes == 8 and np.isfinite(data.train.inputs).all()
    low, high = (
        data.train.inputs[data.train.targets.tolist().index(2), 0],
        data.train.inputs[data.train.targets.tolist().index(4), 0],
    )
    assert low.mean(axis=1).argmax() < high.mean(axis=1).argmax()  # a higher tone peaks in a higher band
    assert load_ravdess(tmp_path, layout="flat").train.inputs.shape == (2, 4096)


def test_feedback_texts_become_tokens_split_by_essay(tmp_path):
    rows = [
        (f"E{i % 5}", f"Some claim, with commas, number {i}.", ["Claim", "Lead", "Evidence"][i % 3]) for i in range(30)
    ]
    frame = pd.DataFrame(rows, columns=["id", "discourse_text", "discourse_type"])
    (tmp_path / "feedback").mkdir()
    frame.to_csv(tmp_path / "feedback" / "train.csv", index=False)
    data = load_feedback(tmp_path, max_length=16)
    assert data.train.inputs.shape[1] == 16 and data.train.inputs.dtype == np.int32
    assert len(data.train) + len(data.validation) == 30 and len(data.validation) == 6  # 1 of 5 essays
    assert data.info["classes"] == ["Claim", "Evidence", "Lead"] and data.info["vocabulary"][:2] == ["<pad>", "<unk>"]
    assert data.info["vocabulary"][data.train.inputs[0, 0]] == "S"
    words = load_feedback(tmp_path, level="word", max_length=8)
    assert words.info["vocabulary"][words.train.inputs[0, 0]] == "some"


@pytest.mark.parametrize(
    "loader, name",
    [
        (load_mnist, "mnist"),
        (load_sign_mnist, "sign_mnist"),
        (load_boston, "boston"),
        (load_ravdess, "ravdess"),
        (load_feedback, "feedback"),
    ],
)
def test_missing_dataset_names_the_script_and_the_path(tmp_path, loader, name):
    with pytest.raises(DatasetNotFoundError) as error:
        loader(tmp_path)
    message = str(error.value)
    assert f"./download_datasets.sh {name}" in message and str(tmp_path / name) in message
