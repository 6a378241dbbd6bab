"""The Python examples of README.md and of the documents it links to run as written:
each document's blocks in order, in one namespace per document (each page stands alone)."""

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
DOCUMENTS = [  # README.md first, then the pages it links to
    "README.md",
    "docs/training.md",
    "docs/derivatives.md",
    "docs/models.md",
    "docs/experiments.md",
    "docs/sweeps.md",
    "docs/operators.md",
    "docs/troubleshooting.md",
    "docs/gpus.md",
    "docs/notebooks.md",
    "experiments/bench/README.md",
]


def python_blocks(document):
    return re.findall(r"```python\n(.*?)```", (ROOT / document).read_text(), re.S)


def test_every_document_with_examples_is_run():
    """A page added to docs/ has its examples run too."""
    pages = {path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").glob("*.md")}
    assert pages | {"README.md", "experiments/bench/README.md"} == set(DOCUMENTS)
    counts = {document: len(python_blocks(document)) for document in DOCUMENTS}
    assert counts["README.md"] >= 2 and counts["docs/training.md"] >= 2 and counts["docs/derivatives.md"] >= 1
    assert counts["docs/experiments.md"] >= 2 and counts["docs/operators.md"] >= 2


@pytest.mark.slow  # the examples train models
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # not the project's store
    namespaces = {}
    for document in DOCUMENTS:
        namespace = namespaces[document] = {}
        for block in python_blocks(document):
            exec(compile(block, str(ROOT / document), "exec"), namespace)
    readme = namespaces["README.md"]
    assert readme["result"].value == 36 and readme["result"].grad(readme["m"].param("w")) == 9
    finished = readme["finished"]  # the runner in Python: compose, run, load
    assert finished.status == "FINISHED" and finished.metrics["val_accuracy"] > 0.5
    loaded = readme["loaded"].named_parameters()
    for name, p in finished.model.named_parameters().items():
        np.testing.assert_array_equal(np.asarray(loaded[name].value), np.asarray(p.value))
    training = namespaces["docs/training.md"]
    assert float(training["metrics"]["loss"]) < 0.1  # the training example trained
    trained = training["model"].named_parameters()["layers.0/W"].value
    assert np.isfinite(trained).all()
    assert training["history"][-1]["val_accuracy"] > 0.8 and (tmp_path / "out" / "last.npz").stat().st_size > 0
    experiments = namespaces["docs/experiments.md"]
    trained = experiments["trained"]  # the in-process run on data of one's own, and its best model back
    assert trained.status == "FINISHED" and trained.metrics["test_accuracy"] > 0.5
    best = experiments["best"].named_parameters()
    for name, p in trained.model.named_parameters().items():
        np.testing.assert_array_equal(np.asarray(best[name].value), np.asarray(p.value))
    operators = namespaces["docs/operators.md"]
    x = operators["jnp"].ones(3)
    assert operators["RowNorm"]()(operators["Multiply"]()(x, x)).shape == ()
