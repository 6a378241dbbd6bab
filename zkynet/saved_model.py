"""A trained model as one folder: how to build it (its class and constructor
arguments), its weights, what it takes as input, and the configuration it was
trained with. `load` builds it back with plain Python (no Hydra); given an MLflow
run id (or a runs:/ or models:/ URI) it first downloads the run's model, and only
then imports MLflow. The folder is also the data of the MLflow pyfunc model each
run logs: MLflow calls `_load_pyfunc` on it (`mlflow models serve`).

A model folder is data: loading it imports and calls nothing but zkynet's own
modules (cg.Module classes under `zkynet.`), unless the caller trusts more by name
(`trusted=`, or $ZKYNET_TRUSTED_MODELS for MLflow's serving: comma-separated class
or package names, e.g. `my_models`). Anything else is refused before any import."""

import importlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from zkynet import checkpoint

MODEL_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "model.json", "weights.npz", "tokenizer.json"
RUN_ID = re.compile(r"[0-9a-f]{32}")


class Loaded(NamedTuple):
    model: Any  # the cg.Module, with its trained parameters
    config: dict  # the configuration it was trained with (a run's resolved config)
    tokenizer: Any = None  # a language model's CharTokenizer: its ids mean nothing without it


def save(model, folder, spec, example, config=None, tokenizer=None):
    """Write `model` to `folder`. `spec` builds it: {"_target_": "package.Class", **arguments},
    nested specs allowed (what a Hydra model config resolves to). `example` is a batch of
    inputs: its dtype and per-example shape are what `predict` accepts."""
    _check_spec(spec)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    example = np.asarray(example)
    description = {
        "spec": spec,
        "input": {"dtype": str(example.dtype), "shape": list(example.shape[1:])},
        "config": config or {},
    }
    (folder / MODEL_FILE).write_text(json.dumps(description, indent=1))
    checkpoint.save(folder / WEIGHTS_FILE, {k: np.asarray(v) for k, v in model.state_dict().items()})
    if tokenizer is not None:
        (folder / TOKENIZER_FILE).write_text(tokenizer.to_json())
    return folder


def load(source, tracking_uri: str | None = None, trusted: Iterable[Any] = (), which: str = "best") -> Loaded:
    """The model saved at `source`: a folder written by `save`, an MLflow model folder
    holding one, an MLflow run id, or a runs:/... or models:/... URI.

    Run ids and URIs are looked up in `tracking_uri` if given, else $MLFLOW_TRACKING_URI
    if set, else in the mlflow.db of the working directory or the nearest folder above
    it and in the project's own store (the one `python -m experiments.run` writes to,
    from any working directory); an error names every store searched. A tracking server
    that does not answer within seconds is named, not waited for.

    `which`: "best" (the run's model: its best epoch's when the run monitored one, e.g.
    with early stopping, else its last) or "last" (the weights of its last epoch, from
    its last checkpoint). `trusted`: classes, or dotted names of classes or packages,
    besides zkynet's modules that the folder may name (your own architecture:
    `trusted=[TinyNet]` or `trusted=["my_models"]`)."""
    if which not in ("best", "last"):
        raise ValueError(f"zkynet.load: which must be 'best' or 'last', got {which!r}")
    trusted = tuple(trusted)
    path = Path(os.fspath(source))
    if path.exists():
        if which == "last":
            raise ValueError(
                f"zkynet.load: which='last' reads a run's last checkpoint; {path} is a model folder (its one model): "
                "give the run id instead"
            )
        return _load_folder(_model_folder(path), trusted=trusted)
    source = str(source)
    if RUN_ID.fullmatch(source):
        source = f"runs:/{source}/model"
    if not source.startswith(("runs:/", "models:/")):
        raise FileNotFoundError(
            f"zkynet.load: {source!r} is neither a folder nor an MLflow run id "
            "(32 hex digits) nor a runs:/ or models:/ URI"
        )
    from zkynet import model_store  # only for run ids: `import zkynet` needs no MLflow

    stores = [tracking_uri] if tracking_uri else model_store.candidates()
    searched = []
    for uri in stores:
        with tempfile.TemporaryDirectory() as folder:
            found = model_store.download(source, uri, Path(folder), which)
            if isinstance(found, str):  # why it is not there
                searched.append(f"{uri} ({found})")
                continue
            local, last = found
            loaded = _load_folder(_model_folder(local), trusted=trusted)
            if last is not None:
                loaded.model.load_state_dict({k: np.asarray(v) for k, v in last.items()})
            return loaded
    hint = "" if tracking_uri else "; pass tracking_uri=... or set MLFLOW_TRACKING_URI to search another store"
    raise FileNotFoundError(
        f"zkynet.load: no model at {source} in the MLflow store(s) searched: "
        f"{'; '.join(searched) or 'none found'}{hint}"
    )


def build(spec, trusted: Iterable[Any] = ()):
    """The object a spec describes: `_target_` imported and called with the other keys
    (themselves built when they are specs). Every target is checked before anything is
    imported: a zkynet cg.Module, or trusted (see `load`); else UntrustedModelError."""
    trust = _trust(trusted)
    classes = {target: _trusted_class(target, trust) for target in targets(spec)}
    return _built(spec, classes)


def targets(spec) -> list[str]:
    """Every `_target_` a spec names, nested ones included."""
    if isinstance(spec, dict):
        own = [spec["_target_"]] if "_target_" in spec else []
        return own + [t for k, v in spec.items() if k != "_target_" for t in targets(v)]
    if isinstance(spec, list):
        return [t for v in spec for t in targets(v)]
    return []


class UntrustedModelError(ImportError):
    """A saved model names a class that loading may not import: not a zkynet module,
    and not trusted by the caller."""


def _built(spec, classes):
    if isinstance(spec, dict):
        arguments = {k: _built(v, classes) for k, v in spec.items() if k != "_target_"}
        return classes[spec["_target_"]](**arguments) if "_target_" in spec else arguments
    if isinstance(spec, list):
        return [_built(v, classes) for v in spec]
    return spec


def _trust(trusted: Iterable[Any]) -> tuple[str, ...]:
    """Trusted dotted names: the caller's (classes by their full name) and $ZKYNET_TRUSTED_MODELS's."""
    names = [t if isinstance(t, str) else f"{t.__module__}.{t.__qualname__}" for t in trusted]
    names += [n.strip() for n in os.environ.get("ZKYNET_TRUSTED_MODELS", "").split(",") if n.strip()]
    return tuple(names)


def _trusted_class(target: Any, trust: tuple[str, ...]) -> Any:
    """The class `target` names, once sure that loading may import and call it."""
    if not isinstance(target, str) or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", target):
        raise UntrustedModelError(f"zkynet.load: {target!r} is not a dotted class name (package.module.Class)")
    trusted = any(target == name or target.startswith(name + ".") for name in trust)
    if not trusted and not target.startswith("zkynet."):
        raise UntrustedModelError(
            f"zkynet.load: the saved model names {target!r}, which is not a zkynet module; a model folder "
            "is data, so loading imports nothing else unless you trust it: zkynet.load(..., "
            f"trusted=[{target.rpartition('.')[0].split('.')[0]!r}]) (or the class itself), or "
            f"ZKYNET_TRUSTED_MODELS={target} for MLflow's serving"
        )
    found = _imported(target)
    if not trusted:
        from zkynet.framework.module import Module  # here, not at `import zkynet`

        if not (isinstance(found, type) and issubclass(found, Module)):
            raise UntrustedModelError(
                f"zkynet.load: the saved model names {target!r}, which is not a zkynet model class "
                "(a cg.Module); loading calls nothing else"
            )
    return found


def _check_spec(spec):
    if not isinstance(spec, dict) or "_target_" not in spec:
        raise ValueError(f"a model spec is a dict with a '_target_' (the class to build), got {spec!r}")
    hydra_only = [k for k in _keys(spec) if k.startswith("_") and k != "_target_"]
    if hydra_only:
        raise ValueError(
            f"model spec: {', '.join(hydra_only)} are Hydra instantiate options that "
            "zkynet.load cannot follow; give plain constructor arguments"
        )


def _keys(spec):
    if isinstance(spec, dict):
        for key, value in spec.items():
            yield key
            yield from _keys(value)
    elif isinstance(spec, list):
        for value in spec:
            yield from _keys(value)


def _imported(target):
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ImportError(
            f"zkynet.load: cannot import the model class {target!r} ({e}); is its package installed or on PYTHONPATH?"
        ) from e


def _model_folder(path):
    """`path` itself, or the zkynet folder inside an MLflow model folder (its data/)."""
    if (path / MODEL_FILE).exists():
        return path
    inside = sorted(path.glob(f"data/*/{MODEL_FILE}"))
    if len(inside) == 1:
        return inside[0].parent
    raise FileNotFoundError(
        f"zkynet.load: {path} holds no {MODEL_FILE} (a folder written by "
        "zkynet.saved_model.save, or an MLflow model logged by a zkynet run)"
    )


def _load_folder(folder, description=None, trusted=()):
    import jax.numpy as jnp  # here, not at `import zkynet`

    description = description or json.loads((folder / MODEL_FILE).read_text())
    model = build(description["spec"], trusted)
    weights = {name: jnp.asarray(value) for name, value in checkpoint.load(folder / WEIGHTS_FILE).items()}
    for name, p in model.named_parameters().items():  # trained in another precision (float64, bfloat16)
        if name in weights:
            p.value = p.value.astype(weights[name].dtype)
    model.load_state_dict(weights)
    tokenizer = None
    if (folder / TOKENIZER_FILE).exists():
        from zkynet.data.text import CharTokenizer

        tokenizer = CharTokenizer.from_json((folder / TOKENIZER_FILE).read_text())
    return Loaded(model, description["config"], tokenizer)


class Predictor:
    """The model as MLflow's pyfunc flavor calls it: a batch of inputs in, its outputs
    out (logits for a classifier; a dict output_0, output_1, ... when it has several)."""

    def __init__(self, folder, trusted=()):
        from zkynet.framework.compile import forward  # here, not at `import zkynet`

        description = json.loads((Path(folder) / MODEL_FILE).read_text())
        loaded = _load_folder(Path(folder), description, trusted)
        self.dtype, self.shape = np.dtype(description["input"]["dtype"]), tuple(description["input"]["shape"])
        self._forward = forward(loaded.model)

    def predict(self, model_input, params=None):
        outputs = self._forward(self._inputs(model_input))
        if isinstance(outputs, tuple):
            return {f"output_{i}": np.asarray(o) for i, o in enumerate(outputs)}
        return np.asarray(outputs)

    def _inputs(self, model_input):
        """A batch shaped (N, *shape): rows of a table (or of a flat array) are reshaped."""
        if isinstance(model_input, dict) and len(model_input) == 1:
            model_input = next(iter(model_input.values()))
        x = np.asarray(model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input)
        if x.shape[1:] != self.shape:
            if x.ndim < 1 or x[:1].size != int(np.prod(self.shape)):
                raise ValueError(
                    f"the model takes examples shaped {list(self.shape)} ({self.dtype}); "
                    f"got a batch shaped {list(x.shape)}"
                )
            x = x.reshape((len(x), *self.shape))
        return x.astype(self.dtype)


def _load_pyfunc(data_path):
    """MLflow's pyfunc loader hook (loader_module=zkynet.saved_model)."""
    return Predictor(data_path)
