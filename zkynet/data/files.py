"""Your own data, from files or from your own function: one contract for all.

A dataset is arrays named by split, one row per example:

    x_train, y_train, x_validation, y_validation     required
    x_test, y_test                                    optional: evaluated once, after training

`load_npz(path)` reads them from one .npz file (`np.savez(path, x_train=..., ...)`);
`load_npy(folder)` from a folder of .npy files of those names, read row by row as
training goes (zkynet.data.mapped: a dataset larger than memory); `load_csv(path)`
from a table with one column of targets; `checked(value, ...)` takes what your own
loader returns (a Dataset, or a mapping of those arrays). Each checks what it got
and names the file (or function) and what is wrong: a missing or misspelt array,
splits whose inputs and targets differ in length, examples shaped differently from
split to split, text or objects where numbers belong, an empty split, labels below 0.

Inputs are numbers: for the "flat" layout each example becomes a row of features,
for "image" an array shaped (channels, height, width) ((height, width) gets one
channel), both as floats; for "tokens" integer ids. Integer targets are class
labels (0..classes-1; -1 is ignored by the losses), real targets are values to
regress (shaped (N,) they become (N, 1)).
"""

import difflib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from zkynet.data.dataset import Dataset, Split, split_rows
from zkynet.data.downloaded import DatasetFileError, DatasetNotFoundError
from zkynet.data.mapped import MappedArray, MappedFileError

SPLITS = ("train", "validation", "test")
REQUIRED = ("x_train", "y_train", "x_validation", "y_validation")
NAMES = (*REQUIRED, "x_test", "y_test")
LAYOUTS = ("flat", "image", "tokens")
IN_MEMORY_BYTES = 64 << 20  # load_npy reads smaller files whole (targets, a validation split)


def load_npz(path, layout="flat"):
    """The arrays of an .npz file (see the module's contract), read into memory."""
    path = _existing(path, "dataset.path")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as e:
        raise DatasetFileError(
            f"cannot read {path} as an .npz file of arrays ({type(e).__name__}: {e}); write it with "
            "np.savez(path, x_train=..., y_train=..., x_validation=..., y_validation=...)"
        ) from None
    return from_arrays(arrays, path.stem, layout, str(path))


def load_npy(path, layout="flat"):
    """A folder of .npy files named as the contract's arrays (x_train.npy, ...), read row
    by row while training: the data is never loaded whole."""
    folder = _existing(path, "dataset.path")
    if not folder.is_dir():
        raise DatasetFileError(f"dataset.path={folder} is not a folder: dataset=npy reads x_train.npy, ... from one")
    arrays = {}
    for file in sorted(folder.glob("*.npy")):
        try:
            mapped = MappedArray(file)
            arrays[file.stem] = mapped if mapped.nbytes > IN_MEMORY_BYTES else mapped[:]  # labels: in memory
        except MappedFileError as e:
            raise DatasetFileError(str(e)) from None
    return from_arrays(arrays, folder.name, layout, f"{folder}/", ".npy files")


def load_csv(path, layout="flat", target=None, test_path=None, validation_fraction=0.2):
    """A table of numbers with a header: the `target` column (default: the last) is the
    targets, the others the features. With a column named `split` (values train,
    validation, test) the rows say which split they belong to; without one, a fixed
    `validation_fraction` of the rows (the same every time) is the validation split.
    `test_path`: a second table of the same columns, the test split."""
    if layout != "flat":
        raise DatasetFileError(f"a CSV file gives rows of features (layout flat), not layout {layout!r}")
    path = _existing(path, "dataset.path")
    frame = _read_table(path)
    columns = [c for c in frame.columns if c != "split"]
    target = columns[-1] if target is None else target
    if target not in columns:
        close = difflib.get_close_matches(str(target), [str(c) for c in columns], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise DatasetFileError(
            f"{path}: no column {target!r} (dataset.target){hint}; its columns: {', '.join(columns)}"
        )
    features = [c for c in columns if c != target]
    if not features:
        raise DatasetFileError(f"{path}: only the target column {target!r}: no features to learn from")

    def arrays(table, where):
        return _column_array(table, features, where), _column_array(table, [target], where)[:, 0]

    parts: dict[str, np.ndarray] = {}
    if "split" in frame.columns:
        unknown = sorted(set(frame["split"].astype(str)) - set(SPLITS))
        if unknown:
            raise DatasetFileError(
                f"{path}: column split has {', '.join(unknown)}; its values are train, validation, test"
            )
        for split in SPLITS:
            rows = frame[frame["split"].astype(str) == split]
            if len(rows):
                parts[f"x_{split}"], parts[f"y_{split}"] = arrays(rows, path)
    else:
        if not 0 < validation_fraction < 1:
            raise DatasetFileError(f"dataset.validation_fraction must be between 0 and 1, got {validation_fraction}")
        x, y = arrays(frame, path)
        train, validation = split_rows(len(x), validation_fraction)
        parts.update(x_train=x[train], y_train=y[train], x_validation=x[validation], y_validation=y[validation])
    if test_path is not None:
        test_path = _existing(test_path, "dataset.test_path")
        test = _read_table(test_path)
        missing = [c for c in (*features, target) if c not in test.columns]
        if missing:
            raise DatasetFileError(f"{test_path}: no column(s) {', '.join(map(str, missing))}, which {path} has")
        parts["x_test"], parts["y_test"] = arrays(test, test_path)
    return from_arrays(parts, path.stem, layout, str(path))


def checked(value, name, layout, where):
    """What a loader returned (a Dataset, or a mapping of the contract's arrays) as a
    Dataset in `layout`, checked; errors name `where` (the loader)."""
    if isinstance(value, Dataset):
        arrays = {f"x_{s}": getattr(value, s).inputs for s in SPLITS if getattr(value, s, None) is not None}
        arrays.update({f"y_{s}": getattr(value, s).targets for s in SPLITS if getattr(value, s, None) is not None})
        checked_dataset = from_arrays(arrays, value.name or name, layout, where)
        classes = value.num_classes or checked_dataset.num_classes
        info = {**checked_dataset.info, **value.info}
        return Dataset(
            checked_dataset.name, checked_dataset.train, checked_dataset.validation, classes, info, checked_dataset.test
        )
    if isinstance(value, Mapping):
        return from_arrays(dict(value), name, layout, where)
    raise DatasetFileError(
        f"{where} returned a {type(value).__name__}; a dataset loader returns a zkynet.data.Dataset or a dict of "
        f"arrays {', '.join(REQUIRED)} (and optionally x_test, y_test)"
    )


def from_arrays(arrays, name, layout, where, kind="arrays"):
    """The contract's checks, then the Dataset in `layout`."""
    if layout not in LAYOUTS:
        raise DatasetFileError(f"{where}: unknown layout {layout!r}; one of {', '.join(LAYOUTS)}")
    unknown = [key for key in arrays if key not in NAMES]
    if unknown:
        hints = [
            f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, NAMES, n=1)) else key
            for key in unknown
        ]
        raise DatasetFileError(
            f"{where}: unexpected {kind} {', '.join(hints)}; a dataset has {', '.join(NAMES[:4])} and "
            "optionally x_test, y_test"
        )
    missing = [key for key in REQUIRED if key not in arrays]
    if ("x_test" in arrays) != ("y_test" in arrays):
        missing.append("y_test" if "x_test" in arrays else "x_test")
    if missing:
        has = ", ".join(arrays) or "none"
        raise DatasetFileError(
            f"{where}: missing {', '.join(missing)}; a dataset has {', '.join(REQUIRED)} (and optionally x_test, "
            f"y_test), this one: {has}"
        )
    for key, array in arrays.items():
        _check_array(key, array, where)
    splits = {}
    for split in SPLITS:
        if f"x_{split}" not in arrays:
            continue
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise DatasetFileError(
                f"{where}: x_{split} has {len(x)} rows but y_{split} has {len(y)}: one target per example"
            )
        splits[split] = (x, y)
    for part, index in (("x", 0), ("y", 1)):
        shapes = {split: tuple(arrays[index].shape[1:]) for split, arrays in splits.items()}
        kinds = {split: _kind(arrays[index]) for split, arrays in splits.items()}
        if len(set(shapes.values())) > 1 or len(set(kinds.values())) > 1:
            shown = ", ".join(f"{part}_{s} {shapes[s]} {np.dtype(splits[s][index].dtype)}" for s in splits)
            raise DatasetFileError(
                f"{where}: the splits' examples differ ({shown}); every split's {part} must be alike"
            )
    x_train, y_train = splits["train"]
    if layout == "tokens" and _kind(x_train) != "integer":
        raise DatasetFileError(
            f"{where}: layout tokens (model.input_layout) needs integer token ids; x_train is {x_train.dtype}"
        )
    if layout == "image" and x_train.ndim not in (3, 4):
        raise DatasetFileError(
            f"{where}: layout image (model.input_layout) needs examples shaped (channels, height, width) or (height, "
            f"width); x_train's are {tuple(x_train.shape[1:])}"
        )
    classes = 0
    if _kind(y_train) == "integer":
        low, high = _range([y for _, y in splits.values()])
        if low < -1:
            raise DatasetFileError(f"{where}: a label is {low}; class labels are 0..classes-1 (or -1: ignored)")
        classes = high + 1
        if layout == "tokens":
            classes = max(classes, _range([x for x, _ in splits.values()])[1] + 1)
    made = {split: Split(_inputs(x, layout), _targets(y)) for split, (x, y) in splits.items()}
    return Dataset(name, made["train"], made["validation"], num_classes=classes, test=made.get("test"))


def describe(dataset, layout):
    """What a model's config reads from its dataset: {features, outputs, image_shape}."""
    shape = tuple(dataset.train.inputs.shape[1:])
    targets = dataset.train.targets
    outputs = dataset.num_classes or (int(np.prod(targets.shape[1:])) if targets.ndim > 1 else 1)
    return {
        "features": int(shape[0]) if layout == "tokens" else int(np.prod(shape)),
        "outputs": int(outputs),
        "image_shape": list(shape) if len(shape) == 3 else None,
    }


def _existing(path, setting):
    if path is None or str(path) in ("", "???"):
        raise DatasetFileError(f"{setting} is not set: give the file (or folder) to read, {setting}=...")
    path = Path(os.path.expanduser(str(path))).absolute()
    if not path.exists():
        raise DatasetNotFoundError(f"{setting}={path}: no such file or folder")
    return path


def _read_table(path):
    try:
        import pandas as pd  # only the CSV loader needs it
    except ImportError:
        raise ImportError(f"reading {path} needs pandas: pip install pandas") from None
    try:
        frame = pd.read_csv(path)
    except Exception as e:
        raise DatasetFileError(f"cannot read {path} as a CSV table ({type(e).__name__}: {e})") from None
    if frame.empty:
        raise DatasetFileError(f"{path}: no rows (a CSV dataset has a header line, then one row per example)")
    if all(_is_number(name) for name in frame.columns):  # read as names, the first example would be lost
        first = ", ".join(map(str, frame.columns[:4])) + (", ..." if len(frame.columns) > 4 else "")
        raise DatasetFileError(
            f"{path}: the first line ({first}) is numbers, not column names: a CSV dataset starts with a "
            "header line naming its columns"
        )
    return frame


def _is_number(text):
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _column_array(frame, columns, path):
    import pandas as pd

    text = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])]
    if text:
        sample = frame[text[0]].astype(str).iloc[0]
        raise DatasetFileError(
            f"{path}: column(s) {', '.join(map(str, text))} hold text (e.g. {sample!r}), not numbers; encode them as "
            "numbers first (or drop them)"
        )
    empty = [c for c in columns if frame[c].isna().any()]
    if empty:
        counts = ", ".join(f"{c} ({int(frame[c].isna().sum())} rows)" for c in empty)
        raise DatasetFileError(f"{path}: empty or missing values in column(s) {counts}; fill or drop them first")
    return frame[columns].to_numpy()


def _check_array(key, array, where):
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        raise DatasetFileError(f"{where}: {key} is a {type(array).__name__}, not an array (np.asarray it first)")
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biuf":
        what = "text" if dtype.kind in "US" else "Python objects" if dtype.kind == "O" else f"dtype {dtype}"
        raise DatasetFileError(
            f"{where}: {key} holds {what}, not numbers; a dataset's arrays hold numbers (encode text as ids)"
        )
    if array.ndim == 0 or len(array) == 0:
        raise DatasetFileError(f"{where}: {key} is empty ({tuple(array.shape)}); every split needs examples")


def _kind(array):
    return "integer" if np.dtype(array.dtype).kind in "biu" else "real"


def _range(arrays):
    """(min, max) over arrays, read in chunks when memory-mapped."""
    low, high = None, None
    for array in arrays:
        chunks = array.chunks() if isinstance(array, MappedArray) else [(0, array)]
        for _, chunk in chunks:
            chunk = np.asarray(chunk)
            low = int(chunk.min()) if low is None else min(low, int(chunk.min()))
            high = int(chunk.max()) if high is None else max(high, int(chunk.max()))
    return low, high


def _inputs(x, layout):
    if layout == "tokens":
        return x.astype(np.int32) if np.dtype(x.dtype) != np.int32 else x
    if layout == "flat" and x.ndim != 2:
        x = x.reshape(len(x), -1)
    elif layout == "image" and x.ndim == 3:
        x = x.reshape(len(x), 1, *x.shape[1:])
    return x if np.dtype(x.dtype) == np.float32 else x.astype(np.float32)


def _targets(y):
    if _kind(y) == "integer":
        return y if np.dtype(y.dtype) == np.int32 else y.astype(np.int32)
    y = y if np.dtype(y.dtype) == np.float32 else y.astype(np.float32)
    return y.reshape(len(y), 1) if y.ndim == 1 else y
