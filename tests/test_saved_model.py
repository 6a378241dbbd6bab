"""A model saved as a folder comes back from it with plain Python: no Hydra, no MLflow."""

import re

import jax.numpy as jnp
import numpy as np
import pytest

import zkynet
from zkynet import saved_model
from zkynet.data import load_digits
from zkynet.framework.compile import forward
from zkynet.models.cnn import LeNet
from zkynet.models.fcn import MLP

SPEC = {
    "_target_": "zkynet.models.cnn.LeNet",
    "input_shape": [1, 8, 8],
    "num_classes": 10,
    "channels": [4],
    "hidden": [16],
    "key": 3,
}


def test_a_saved_model_loads_with_its_weights_config_and_inputs(tmp_path):
    model = saved_model.build(SPEC)
    for p in model.named_parameters().values():  # "trained": unlike a fresh LeNet(key=3)
        p.value = p.value + 0.5
    images = load_digits(layout="image").validation.inputs[:4]
    saved_model.save(model, tmp_path / "m", SPEC, images[:2], config={"seed": 3})
    loaded = zkynet.load(tmp_path / "m")
    assert isinstance(loaded.model, LeNet) and loaded.config == {"seed": 3} and loaded.tokenizer is None
    np.testing.assert_array_equal(forward(loaded.model)(images), forward(model)(images))

    predictor = saved_model._load_pyfunc(str(tmp_path / "m"))  # what MLflow's pyfunc flavor calls
    rows = images.reshape(4, 64).astype(np.float64)  # a table's rows: reshaped and cast to what the model takes
    np.testing.assert_allclose(predictor.predict(rows), forward(model)(images), rtol=1e-6)
    with pytest.raises(
        ValueError, match=r"takes examples shaped \[1, 8, 8\] \(float32\); got a batch shaped \[4, 10\]"
    ):
        predictor.predict(np.zeros((4, 10)))


def test_a_language_model_comes_back_with_its_tokenizer(tmp_path):
    from zkynet.data.text import CharTokenizer

    spec = {"_target_": "zkynet.models.rnn.RecurrentLM", "vocabulary": 12, "embed": 4, "hidden": 8, "cell": "gru"}
    tokenizer = CharTokenizer("abcdefghij")
    saved_model.save(saved_model.build(spec), tmp_path, spec, tokenizer.encode("abc")[None], tokenizer=tokenizer)
    loaded = zkynet.load(tmp_path)
    assert loaded.tokenizer.vocabulary == tokenizer.vocabulary and loaded.tokenizer.decode([2, 3]) == "ab"


def test_weights_keep_their_trained_precision(tmp_path):
    spec = {"_target_": "zkynet.models.fcn.MLP", "widths": [4, 3], "key": 0}
    model = saved_model.build(spec)
    for p in model.named_parameters().values():
        p.value = p.value.astype(jnp.bfloat16)
    saved_model.save(model, tmp_path, spec, np.zeros((1, 4), np.float32))
    assert {p.value.dtype for p in zkynet.load(tmp_path).model.named_parameters().values()} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"widths": [4, 3]}, "a model spec is a dict with a '_target_'"),
        ({"_target_": "zkynet.models.fcn.MLP", "_partial_": True}, "_partial_ are Hydra instantiate options"),
    ],
)
def test_a_spec_it_cannot_build_is_refused_when_saving(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        saved_model.save(None, tmp_path, spec, np.zeros((1, 4)))


def test_a_class_that_cannot_be_imported_is_named(tmp_path):
    spec = {"_target_": "zkynet.models.fcn.MLP", "widths": [4, 3]}
    saved_model.save(saved_model.build(spec), tmp_path, {**spec, "_target_": "my_models.Gone"}, np.zeros((1, 4)))
    with pytest.raises(ImportError, match=re.escape("cannot import the model class 'my_models.Gone'")):
        zkynet.load(tmp_path, trusted=["my_models"])
    with pytest.raises(FileNotFoundError, match=re.escape("holds no model.json")):
        zkynet.load(tmp_path.parent)


def _saved_naming(folder, target, **arguments):
    """A model folder (real weights) whose spec names `target` instead of its class."""
    spec = {"_target_": "zkynet.models.fcn.MLP", "widths": [4, 3]}
    saved_model.save(saved_model.build(spec), folder, {"_target_": target, **arguments}, np.zeros((1, 4)))
    return folder


@pytest.mark.parametrize("target", ["os.makedirs", "builtins.exec", "my_models.TinyNet"])
def test_loading_refuses_what_is_not_a_zkynet_module_before_importing_it(tmp_path, target, monkeypatch):
    made = tmp_path / "made-by-loading"
    folder = _saved_naming(tmp_path / "m", target, name=str(made))
    monkeypatch.delenv("ZKYNET_TRUSTED_MODELS", raising=False)
    with pytest.raises(saved_model.UntrustedModelError, match=re.escape(f"names '{target}', which is not a zkynet")):
        zkynet.load(folder)
    assert not made.exists()
    with pytest.raises(saved_model.UntrustedModelError):
        saved_model._load_pyfunc(str(folder))  # MLflow's serving refuses it too


def test_a_zkynet_name_that_is_not_a_model_class_is_refused(tmp_path):
    folder = _saved_naming(tmp_path, "zkynet.checkpoint.save", path=str(tmp_path / "x.npz"), tree={})
    with pytest.raises(saved_model.UntrustedModelError, match="not a zkynet model class"):
        zkynet.load(folder)
    assert not (tmp_path / "x.npz").exists()


class Widths(MLP):
    """A user's own architecture (here: an MLP under another name)."""


def test_a_trusted_class_of_the_callers_loads(tmp_path, monkeypatch):
    name = f"{Widths.__module__}.Widths"
    folder = _saved_naming(tmp_path, name, widths=[4, 3])
    with pytest.raises(saved_model.UntrustedModelError):
        zkynet.load(folder)
    assert isinstance(zkynet.load(folder, trusted=[Widths]).model, Widths)
    assert isinstance(zkynet.load(folder, trusted=[Widths.__module__]).model, Widths)
    monkeypatch.setenv("ZKYNET_TRUSTED_MODELS", f"somewhere.else, {name}")
    assert saved_model._load_pyfunc(str(folder)).predict(np.zeros((2, 4))).shape == (2, 3)
