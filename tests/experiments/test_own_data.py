"""Your own data through the runner (issue 24, point 4): `dataset=npz`, `dataset=csv`,
`dataset=npy` (a folder of files read row by row) and `dataset=custom` (a loader by
`_target_`), a test split evaluated once and logged as test_*, and every bad input
refused by name before any MLflow run exists."""

import re

import numpy as np
import pytest

from experiments.schema import ConfigError
from tests.fixtures.own_work import digits_arrays
from zkynet.data import Batches, DatasetFileError, MappedArray, load_npy
from zkynet.training.trainer import check_finite

LOADERS = "dataset.loader._target_=tests.fixtures.own_work."


def test_an_npz_file_trains_with_its_test_split_evaluated_once(runner, tmp_path):
    path = tmp_path / "digits.npz"
    np.savez(path, **digits_arrays())
    result = runner("dataset=npz", f"dataset.path={path}", "trainer.epochs=2")
    (run,) = runner.runs()
    assert run.data.params["dataset/features"] == "64" and run.data.params["dataset/outputs"] == "10"
    assert run.data.params["model/widths"] == "[64, 256, 256, 10]"  # read from the data
    test = runner.client.get_metric_history(run.info.run_id, "test_accuracy")
    assert len(test) == 1 and test[0].step == 44 and test[0].value > 0.8  # once, at the end
    assert result.metrics["test_accuracy"] == pytest.approx(test[0].value)
    assert {"test_loss", "val_loss"} <= set(run.data.metrics) and run.data.tags["dataset"] == "digits"


def test_an_image_layout_and_a_regression_from_npz(runner, tmp_path):
    arrays = {k: (v.reshape(-1, 8, 8) if k.startswith("x_") else v) for k, v in digits_arrays(test=False).items()}
    np.savez(tmp_path / "images.npz", **arrays)
    runner("model=cnn", "dataset=npz", f"dataset.path={tmp_path / 'images.npz'}", "trainer.epochs=1")
    (run,) = runner.runs()
    assert run.data.params["dataset/image_shape"] == "[1, 8, 8]" and run.info.status == "FINISHED"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float64)
    y = x @ np.arange(1.0, 6.0)  # shaped (N,): one value per example
    np.savez(tmp_path / "line.npz", x_train=x[:200], y_train=y[:200], x_validation=x[200:], y_validation=y[200:])
    runner("dataset=npz", f"dataset.path={tmp_path / 'line.npz'}", "task=regression", "trainer.epochs=3")
    regression = runner.runs("regression")[0]
    assert regression.data.params["dataset/outputs"] == "1" and np.isfinite(regression.data.metrics["val_loss"])


def test_a_csv_table_trains_and_its_split_column_places_rows(runner, tmp_path):
    pd = pytest.importorskip("pandas")
    arrays = digits_arrays()
    frames = []
    for split in ("train", "validation", "test"):
        frame = pd.DataFrame(arrays[f"x_{split}"], columns=[f"p{i}" for i in range(64)])
        frame["digit"], frame["split"] = arrays[f"y_{split}"], split
        frames.append(frame)
    pd.concat(frames).to_csv(tmp_path / "digits.csv", index=False)
    runner("dataset=csv", f"dataset.path={tmp_path / 'digits.csv'}", "dataset.target=digit", "trainer.epochs=1")
    (run,) = runner.runs()
    assert run.data.metrics["test_accuracy"] > 0.5 and run.data.params["dataset/features"] == "64"


def test_your_own_loader_by_target_without_a_layout_argument(runner):
    runner("dataset=custom", f"{LOADERS}load_good", "+dataset.loader.scale=1.0", "trainer.epochs=1")
    (run,) = runner.runs()
    assert run.info.status == "FINISHED" and run.data.metrics["val_accuracy"] > 0.5  # uint8 pixels became floats


BAD = [  # (overrides, files to write, what the message says)
    (
        ["dataset=custom", f"{LOADERS}load_mismatched"],
        {},
        "dataset.loader (tests.fixtures.own_work.load_mismatched): x_train has 1438 rows but y_train has 1431",
    ),
    (["dataset=custom", f"{LOADERS}load_strings"], {}, "load_strings): x_validation holds text, not numbers"),
    (["dataset=custom", f"{LOADERS}load_empty"], {}, "load_empty): x_train is empty ((0, 64))"),
    (
        ["dataset=custom", f"{LOADERS}load_nothing_useful"],
        {},
        "returned a list; a dataset loader returns a zkynet.data.Dataset or a dict of arrays",
    ),
    (["dataset=custom", f"{LOADERS}no_such_function"], {}, "dataset.loader (tests.fixtures.own_work.no_such_function)"),
    (["dataset=custom"], {}, "dataset.loader._target_ is not set (???)"),
    (["dataset=npz"], {}, "dataset.path is not set (???): give it on the command line, dataset.path=..."),
    (["dataset=npz", "dataset.path={tmp}/nothing.npz"], {}, "nothing.npz: no such file or folder"),
    (
        ["dataset=npz", "dataset.path={tmp}/d.npz"],
        {"d.npz": ("x_train", "y_train", "x_valid", "y_validation")},
        "unexpected arrays x_valid (did you mean x_validation?)",
    ),
    (
        ["dataset=npz", "dataset.path={tmp}/d.npz"],
        {"d.npz": ("x_train", "y_train", "y_validation")},
        "missing x_validation; a dataset has x_train, y_train, x_validation, y_validation (and optionally x_test, "
        "y_test), this one: x_train, y_train, y_validation",
    ),
    (["dataset=npz", "dataset.path={tmp}/d.npz"], {"d.npz": b"PK\x03\x04 not really"}, "cannot read"),
    (["dataset=npy", "dataset.path={tmp}/cut"], {"cut": "truncated"}, "x_train.npy is cut short"),
    (
        ["dataset=npz", "dataset.path={tmp}/d.npz", "task=regression"],
        {"d.npz": "digits"},
        "model MLP (model=MLP) does not fit task regression on dataset d",
    ),
    (
        ["dataset=npz", "dataset.path={tmp}/d.npz"],
        {"d.npz": "real targets"},
        "does not fit task classification on dataset d",
    ),
    (
        ["dataset=csv", "dataset.path={tmp}/t.csv"],
        {"t.csv": b"a,b,label\n1,x,0\n2,y,1\n"},
        "t.csv: column(s) b hold text (e.g. 'x'), not numbers",
    ),
    (
        ["dataset=csv", "dataset.path={tmp}/t.csv", "dataset.target=lable"],
        {"t.csv": b"a,label\n1,0\n2,1\n"},
        "no column 'lable' (dataset.target); did you mean label?",
    ),
    (
        ["dataset=csv", "dataset.path={tmp}/t.csv"],
        {"t.csv": b"a,label\n1,0\n,1\n"},
        "empty or missing values in column(s) a (1 rows)",
    ),
    (  # read as column names, its first example would silently be lost
        ["dataset=csv", "dataset.path={tmp}/t.csv"],
        {"t.csv": b"1,2,0\n3,4,1\n5,6,0\n"},
        "t.csv: the first line (1, 2, 0) is numbers, not column names",
    ),
]


@pytest.mark.parametrize("overrides, files, message", BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_data_is_refused_by_name_before_any_run(runner, tmp_path, overrides, files, message):
    arrays = digits_arrays(test=False)
    for name, content in files.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        elif content == "truncated":
            (tmp_path / name).mkdir()
            for key, value in arrays.items():
                np.save(tmp_path / name / f"{key}.npy", value)
            data = (tmp_path / name / "x_train.npy").read_bytes()
            (tmp_path / name / "x_train.npy").write_bytes(data[: len(data) // 2])
        elif content == "digits":
            np.savez(tmp_path / name, **arrays)
        elif content == "real targets":
            np.savez(tmp_path / name, **{k: v.astype(np.float32) for k, v in arrays.items()})
        else:
            np.savez(tmp_path / name, **{key: arrays.get(key, arrays["y_validation"]) for key in content})
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    with pytest.raises((DatasetFileError, ConfigError, FileNotFoundError), match=re.escape(message)):
        runner(*overrides, "trainer.epochs=1")
    assert runner.runs() == []  # refused before any MLflow run exists


def test_a_folder_of_npy_files_trains_read_row_by_row(runner, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    for key, value in digits_arrays().items():
        np.save(folder / f"{key}.npy", value)
    result = runner("dataset=npy", f"dataset.path={folder}", "trainer.epochs=2")
    (run,) = runner.runs()
    assert run.data.metrics["val_accuracy"] > 0.8 and "test_accuracy" in run.data.metrics
    assert result.metrics["test_loss"] == pytest.approx(run.data.metrics["test_loss"])


def _rss_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def test_a_folder_of_npy_files_streams_a_file_larger_than_what_stays_in_memory(tmp_path):
    rows, features = 64_000, 1024  # x_train.npy: 256 MB of float32, each row filled with its own number
    array = np.lib.format.open_memmap(tmp_path / "x_train.npy", mode="w+", dtype=np.float32, shape=(rows, features))
    for start in range(0, rows, 8000):
        array[start : start + 8000] = np.arange(start, start + 8000, dtype=np.float32)[:, None]
    array.flush()
    del array
    np.save(tmp_path / "y_train.npy", np.arange(rows, dtype=np.int32) % 10)
    np.save(tmp_path / "x_validation.npy", np.zeros((100, features), np.float32))
    np.save(tmp_path / "y_validation.npy", np.zeros(100, np.int32))
    before = peak = _rss_mb()
    data = load_npy(tmp_path)  # checked as the contract says (labels' range read in chunks)
    check_finite(data)  # what a Trainer does first: one pass over the whole file
    peak = max(peak, _rss_mb())
    assert isinstance(data.train.inputs, MappedArray) and isinstance(data.train.targets, np.ndarray)
    seen = 0
    for x, y in Batches(data.train, 256, seed=0).epoch(0):
        x, y = np.asarray(x), np.asarray(y)
        assert (x[:, 0] % 10 == y).all() and (x[:, 0] == x[:, -1]).all()  # whole rows, each its own
        seen += len(x)
        peak = max(peak, _rss_mb())
    assert seen == rows and peak - before < 128  # MB: a chunk and a few batches, not the 256 MB file
    with pytest.raises(IndexError):
        data.train.inputs[rows]


def test_a_mapped_array_reads_like_the_array_it_holds(tmp_path):
    array = np.arange(5000 * 7, dtype=np.float32).reshape(5000, 7)
    np.save(tmp_path / "a.npy", array)
    mapped = MappedArray(tmp_path / "a.npy")
    rng = np.random.default_rng(0)
    for _ in range(5):
        rows = rng.permutation(5000)[:1500]  # more than one positional read's 1024 buffers
        np.testing.assert_array_equal(mapped[rows], array[rows])
    np.testing.assert_array_equal(mapped[10:2000], array[10:2000])
    np.testing.assert_array_equal(mapped[-1], array[-1])
    np.testing.assert_array_equal(mapped[:2, 3], array[:2, 3])
    np.testing.assert_array_equal(np.asarray(mapped), array)
    subset = mapped.subset(np.arange(100, 200)).astype(np.float64).reshape(100, 7, 1)
    assert subset[5:7].dtype == np.float64 and subset.shape == (100, 7, 1)
    np.testing.assert_array_equal(subset[5:7, :, 0], array[105:107])
