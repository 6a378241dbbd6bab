"""README's Python examples run as written, in order, in one namespace."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).parents[1] / "README.md"


@pytest.mark.slow  # README's examples train models
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # not the project's store
    namespace = {}
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["result"].value == 36 and namespace["result"].grad(namespace["m"].param("w")) == 9
    assert float(namespace["metrics"]["loss"]) < 0.1  # the training example trained
    trained = namespace["model"].named_parameters()["layers.0/W"].value
    assert np.isfinite(trained).all()
    assert namespace["history"][-1]["val_accuracy"] > 0.8 and (tmp_path / "out" / "last.npz").stat().st_size > 0
    trained = namespace["trained"]  # the in-process run on data of one's own, and its best model back
    assert trained.status == "FINISHED" and trained.metrics["test_accuracy"] > 0.5
    best = namespace["best"].named_parameters()
    for name, p in trained.model.named_parameters().items():
        np.testing.assert_array_equal(np.asarray(best[name].value), np.asarray(p.value))
    x = namespace["jnp"].ones(3)
    assert namespace["RowNorm"]()(namespace["Multiply"]()(x, x)).shape == ()
