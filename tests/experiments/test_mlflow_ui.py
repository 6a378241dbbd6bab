"""The MLflow UI, opened in headless Chromium over a store a real run wrote, at the
link the run prints: the run table in MLflow's Model training view, the run, its
metrics and its graph picture. The screenshots are kept in outputs/test-artifacts/."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.experiments.test_sweep import free_port

ARTIFACTS = Path(__file__).parents[2] / "outputs" / "test-artifacts"
CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=20000", "--window-size=1400,1000"]


@pytest.fixture
def mlflow_ui(runner):
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", runner.store, "--host",
                           "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200:
                    break
            except OSError:
                if time.time() > deadline or ui.poll() is not None:
                    raise RuntimeError("the MLflow UI did not start")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # the UI and its server workers
        ui.wait(timeout=30)


def browse(url, profile, dump=None, screenshot=None):
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}"]
    command += ["--dump-dom"] if dump else [f"--screenshot={screenshot}"]
    result = subprocess.run(command + [url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium cannot be installed here: setup.sh installs Debian's "
                                             "chromium package only as root with apt-get")
def test_the_mlflow_ui_opens_on_the_run_table_and_shows_the_run_its_metrics_and_its_graph(runner, tmp_path, request,
                                                                                          capsys):
    runner("model=mlp", "trainer.epochs=2")
    (run,) = runner.runs()
    printed = re.findall(r"open (http://127\.0\.0\.1:5000/\S+)", capsys.readouterr().err)
    assert printed == [f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs?workflowType=machine_learning"]
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert printed[0].replace(f"/{run.info.experiment_id}/", "/<id>/") in readme  # the README points to the same page
    assert runner.client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    ui = request.getfixturevalue("mlflow_ui")
    table = browse(printed[0].replace("http://127.0.0.1:5000", ui), tmp_path / "chrome", dump=True)
    assert run.info.run_name in table and "Model registry" in table  # the runs table, in the Model training view
    assert "Judges" not in table and "Evaluation runs" not in table  # not the GenAI view a fresh browser starts in
    run_page = f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    view = "?workflowType=machine_learning"
    overview = browse(run_page + view, tmp_path / "chrome", dump=True)
    assert run.info.run_name in overview and "Finished" in overview
    assert all(name in overview for name in ("val_accuracy", "val_loss", "train_loss", "samples_per_second"))
    artifacts = browse(f"{run_page}/artifacts/graph.png{view}", tmp_path / "chrome", dump=True)
    assert '<img alt="graph.png"' in artifacts and "graph.svg" in artifacts
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, url in [("mlflow-ui-runs.png", printed[0].replace("http://127.0.0.1:5000", ui)),
                      ("mlflow-ui-run.png", run_page + view), ("mlflow-ui-graph.png", f"{run_page}/artifacts/graph.png{view}")]:
        browse(url, tmp_path / "chrome", screenshot=ARTIFACTS / name)
        assert (ARTIFACTS / name).read_bytes().startswith(b"\x89PNG") and (ARTIFACTS / name).stat().st_size > 20000
