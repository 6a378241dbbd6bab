"""The library stands alone: `import zkynet` and training with it need only the core
dependencies (jax, numpy, graphviz), never the runner or its extras."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).parents[2]
EXTRAS = (
    "experiments",
    "hydra",
    "omegaconf",
    "mlflow",
    "ray",
    "optuna",
    "pandas",
    "matplotlib",
    "sklearn",
    "tqdm",
    "pytest",
    "hypothesis",
    "nbclient",
    "nbformat",
    "ipykernel",
    "IPython",
)

# Runs in a fresh interpreter where the extras cannot be imported at all, as after
# `pip install zkynet` alone: every zkynet module loads, and a model trains,
# checkpoints, draws its graph and is saved and loaded back.
SCRIPT = textwrap.dedent(f"""
    import importlib, pkgutil, sys, tempfile
    from pathlib import Path

    EXTRAS = {EXTRAS!r}

    class RefuseExtras:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in EXTRAS:
                raise ModuleNotFoundError(f"{{name}} is not installed (a core-only install)")

    sys.meta_path.insert(0, RefuseExtras())
    import zkynet
    for module in pkgutil.walk_packages(zkynet.__path__, "zkynet."):
        importlib.import_module(module.name)

    from zkynet import losses, optim
    from zkynet.data import load_digits
    from zkynet.models.fcn import MLP
    from zkynet.training import Checkpointer, NanGuard, ProgressReport, Trainer
    from zkynet.visual import plot_cg

    folder = Path(tempfile.mkdtemp())
    model = MLP([64, 16, 10])
    trainer = Trainer(model, losses.softmax_cross_entropy, optim.Adam(1e-2), load_digits(), epochs=2, batch_size=64,
                      metrics=losses.classification_metrics,
                      callbacks=[ProgressReport(), NanGuard(), Checkpointer(folder / "last.npz")])
    history = trainer.fit()
    trainer.callbacks[-1].wait()
    assert history[-1]["val_accuracy"] > 0.5, history
    assert (folder / "last.npz").stat().st_size > 0
    assert Path(plot_cg(model(load_digits().train.inputs[:2]).root, save_path=str(folder / "g.png"))).exists()
    from zkynet import saved_model  # a saved model loads back from its folder without MLflow
    saved_model.save(model, folder / "model", {{"_target_": "zkynet.models.fcn.MLP", "widths": [64, 16, 10]}},
                     load_digits().validation.inputs[:2])
    assert zkynet.load(folder / "model").model.state_dict().keys() == model.state_dict().keys()
    loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set(EXTRAS))
    print("loaded extras:", loaded)
""")


@pytest.mark.slow  # a fresh process that imports every module and trains
def test_the_library_imports_and_trains_without_the_runner_or_any_extra():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "loaded extras: []" in result.stdout


def test_the_core_dependencies_are_jax_numpy_and_graphviz():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {spec.split(">")[0].split("=")[0].split("[")[0] for spec in project["dependencies"]}
    assert names == {"jax", "jaxlib", "numpy", "graphviz"}
    assert {"experiments", "test"} <= set(project["optional-dependencies"])
    assert '-e "$root[experiments,test]"' in (ROOT / "setup.sh").read_text()  # a new user gets it all
