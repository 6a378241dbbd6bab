"""Every configuration users are pointed at composes and builds, in-process with
Hydra's compose API (as lightning-hydra-template's config tests do)."""

import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import build, schema
from zkynet.framework.compile import Objective
from zkynet.tasks import Task

ROOT = Path(__file__).parents[2]
PRESETS = sorted(path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml"))


def built(cfg):
    """(task, dataset, model, the loss on two training examples)."""
    schema.check(cfg)
    task = build.task(cfg)
    dataset = build.dataset(cfg, task)
    model = build.model(cfg)
    graph = Objective(model, task.loss)(dataset.train.inputs[:2], dataset.train.targets[:2])
    return task, dataset, model, graph.roots[0].value


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_builds(runner, preset):
    cfg = runner.config(f"+experiment={preset}", "dataset.loader.max_chars=20000" if "text" in preset else "seed=0")
    task, dataset, model, loss = built(cfg)
    assert isinstance(task, Task) and task.name == cfg.task.name and len(dataset.train) > 0
    assert loss.shape == () and np.isfinite(float(loss))
    assert model.named_parameters() and all(jnp.isfinite(p.value).all() for p in model.named_parameters().values())
    assert [type(c).__name__ for c in build.callbacks(cfg)] == ["ProgressReport", "NanGuard", "Checkpointer"]


@pytest.mark.parametrize(
    "overrides, task",
    [
        ((), "classification"),
        (("dataset=copy", "model=lstm"), "language_model"),
        (("model=autoencoder",), "reconstruction"),  # the model's task wins over the dataset's
        (("model=vae",), "vae"),
        (("dataset=copy", "model=lstm", "task=classification"), "classification"),  # the command line wins
    ],
)
def test_the_task_comes_from_the_dataset_the_model_or_the_command_line(runner, overrides, task):
    assert runner.config(*overrides).task.name == task


def test_a_self_supervised_task_trains_on_its_inputs(runner):
    task, dataset, _, _ = built(runner.config("model=autoencoder"))
    np.testing.assert_array_equal(dataset.train.targets, dataset.train.inputs)
    assert task.targets_are_inputs and task.artifacts == ("reconstructions",)


MODELS = sorted(path.stem for path in (ROOT / "conf" / "model").glob("*.yaml"))


def test_every_model_alone_picks_a_dataset_that_fits(runner):
    """`python -m experiments.run model=<any>` as docs/models.md prints it: the model's own
    dataset unless the command line (or a preset) chooses one. One test: each config
    composed here costs a second, each fixture a fresh MLflow store."""
    datasets = {}
    for model in MODELS:
        cfg = runner.config(f"model={model}")
        schema.check(cfg)  # every ${dataset...} the model reads exists
        datasets[model] = cfg.dataset.name
        if cfg.dataset.name not in ("digits", "feedback"):  # digits: the presets build them; feedback: a download
            _, dataset, _, loss = built(cfg)
            assert np.isfinite(float(loss)) and len(dataset.train) > 0
    assert {m: d for m, d in datasets.items() if d != "digits"} == {
        "gru": "copy",
        "lstm": "copy",
        "rnn": "copy",
        "transformer": "copy",
        "transformer_classifier": "feedback",
    }
    assert runner.config("model=gru", "dataset=reverse").dataset.name == "reverse"
    assert runner.config("+experiment=addition_transformer").dataset.name == "addition"


def test_an_unknown_setting_is_one_line_naming_the_setting_meant():
    from experiments.run import unknown_setting

    assert "did you mean model?" in unknown_setting(["modle=mlp"])
    assert "did you mean trainer.epochs?" in unknown_setting(["-m", "epochs=5"])
    assert "did you mean optimizer.lr?" in unknown_setting(["lr=0.1"])
    assert unknown_setting(["xyz=1"]).startswith("unknown setting 'xyz' in 'xyz=1' (settings: callbacks, dataset")
    fine = ["model=cnn", "trainer.epochs=2", "+experiment=copy_lstm", "~callbacks", "-m", "seed=0,1"]
    fine += ["hydra.sweeper.num_samples=2", "optimizer.lr=tag(log, interval(1e-4, 1e-2))", "hydra/sweeper=basic"]
    assert unknown_setting(fine) is None
    result = subprocess.run(
        [sys.executable, "-m", "experiments.run", "modle=mlp"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines() == ["error: " + unknown_setting(["modle=mlp"])]
