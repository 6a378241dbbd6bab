"""A run's trained model comes back: `zkynet.load(<run id>)`, MLflow's pyfunc flavor, the
model registry, and `mlflow models serve` answering HTTP on loopback."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import mlflow
import numpy as np
import pytest

import zkynet
from tests.experiments.test_sweep import free_port
from zkynet import checkpoint
from zkynet.data import load_digits
from zkynet.framework.compile import forward
from zkynet.models.fcn import MLP


@pytest.fixture
def trained(runner, monkeypatch):
    """(the run, its store) of a 2-epoch digits MLP whose model is registered as digits-mlp."""
    runner("trainer.epochs=2", "tracking.registered_model=digits-mlp")
    (run,) = runner.runs()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", runner.store)  # for mlflow.pyfunc and the CLI
    return run, runner.store


def test_zkynet_load_and_mlflow_pyfunc_give_the_trained_model_back(trained, tmp_path):
    run, store = trained
    loaded = zkynet.load(run.info.run_id, tracking_uri=store)
    assert isinstance(loaded.model, MLP) and loaded.config["model"]["widths"] == [64, 256, 256, 10]
    assert loaded.config["trainer"]["epochs"] == 2 and loaded.tokenizer is None
    final = checkpoint.load(
        mlflow.MlflowClient(store).download_artifacts(run.info.run_id, "checkpoints/last.npz", str(tmp_path))
    )["params"]
    for name, p in loaded.model.named_parameters().items():
        np.testing.assert_array_equal(np.asarray(p.value), final[name])

    x = load_digits().validation.inputs[:5]
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    np.testing.assert_allclose(pyfunc.predict(x), forward(loaded.model)(x), rtol=1e-6)
    (spec,) = pyfunc.metadata.signature.inputs.to_dict()
    assert spec["tensor-spec"] == {"dtype": "float32", "shape": (-1, 64)}
    assert pyfunc.metadata.saved_input_example_info is not None

    versions = mlflow.MlflowClient(store).search_model_versions("name='digits-mlp'")
    assert [(int(v.version), v.run_id) for v in versions] == [(1, run.info.run_id)]
    registered = zkynet.load("models:/digits-mlp/1", tracking_uri=store)
    for name, p in registered.model.named_parameters().items():
        np.testing.assert_array_equal(np.asarray(p.value), final[name])
    with pytest.raises(FileNotFoundError, match="neither a folder nor an MLflow run id"):
        zkynet.load(tmp_path / "nothing-here")


@pytest.mark.slow
def test_mlflow_models_serve_answers_over_http(trained, tmp_path):
    run, _store = trained
    x = load_digits().validation.inputs[:3]
    expected = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(x)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"runs:/{run.info.run_id}/model",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).close()
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "the model server did not start"
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            method="POST",
            data=json.dumps({"inputs": x.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            predictions = np.array(json.loads(response.read())["predictions"])
        np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-6)
        assert (predictions.argmax(1) == load_digits().validation.targets[:3]).mean() >= 2 / 3
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
