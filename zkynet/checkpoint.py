"""Saving and loading nested dicts of arrays (parameters, optimizer state) as one
.npz file: exact to the bit, readable with plain NumPy. Dtypes NumPy's format cannot
name (bfloat16) are stored as their raw bits, their names beside them."""

import json
import os
import shutil
import tempfile
from typing import Any

import ml_dtypes
import numpy as np

SEPARATOR = "::"  # parameter names use "/" (layers.0/W), so nesting uses this
DTYPES = "__dtypes__"  # {path: dtype name} of the arrays stored as raw bits


def flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        if SEPARATOR in str(key):
            raise ValueError(f"key {key!r} contains {SEPARATOR!r}")
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + SEPARATOR))
        else:
            flat[path] = np.asarray(value)
    return flat


def unflatten(flat):
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(SEPARATOR)
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def save(path, tree):
    """Write `tree` to `path` atomically: a crash mid-write never leaves a truncated file."""
    flat = flatten(tree)
    unnamed = {key: str(value.dtype) for key, value in flat.items() if value.dtype.kind == "V"}  # bfloat16
    flat = {key: value.view(f"u{value.dtype.itemsize}") if key in unnamed else value for key, value in flat.items()}
    if unnamed:
        flat[DTYPES] = np.array(json.dumps(unnamed))
    _write_atomically(path, lambda f: np.savez(f, **flat))


def copy(source, destination):
    """Copy a checkpoint file, atomically like `save`."""
    with open(source, "rb") as original:
        _write_atomically(destination, lambda f: shutil.copyfileobj(original, f))


def _write_atomically(path, write):
    """`write(file)` into a temporary file beside `path`, then rename it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names it."""


def load(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except Exception as e:  # zipfile's, pickle's and NumPy's errors never say which file
        raise CheckpointError(
            f"cannot read the checkpoint {path} ({type(e).__name__}: {e}): it is not a complete .npz written by zkynet"
        ) from e
    for key, name in json.loads(str(flat.pop(DTYPES, "{}"))).items():
        flat[key] = flat[key].view(getattr(ml_dtypes, name))
    return unflatten(flat)
