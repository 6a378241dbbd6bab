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
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",
    "--window-size=1400,1000",
]


@pytest.fixture
def mlflow_ui(runner):
    port = free_port()
    # One server process, without MLflow's job runner (GenAI jobs, which no page here uses): by
    # default `mlflow ui` starts 4 workers and a job runner, 15 processes that take tens of
    # seconds to start and 15 to stop on 2 cores.
    ui = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            runner.store,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200:
                    break
            except OSError:
                if time.time() > deadline or ui.poll() is not None:
                    raise RuntimeError("the MLflow UI did not start") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # the UI and its server workers
        ui.wait(timeout=30)


def browse(url, profile, screenshot):
    """The page's DOM once it has rendered, and a screenshot of it (one browser start for both)."""
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", f"--screenshot={screenshot}", url]
    screenshot.unlink(missing_ok=True)  # none from an earlier run
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 20000
    return result.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium cannot be installed here: setup.sh installs Debian's chromium package only as root with apt-get",
)
def test_the_mlflow_ui_opens_on_the_run_table_and_shows_the_run_its_metrics_and_its_graph(
    runner, tmp_path, request, capsys
):
    runner("model=mlp", "trainer.epochs=2")
    (run,) = runner.runs()
    printed = re.findall(r"open (http://127\.0\.0\.1:5000/\S+)", capsys.readouterr().err)
    assert printed == [
        f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs?workflowType=machine_learning"
    ]
    page = (Path(__file__).parents[2] / "docs" / "experiments.md").read_text()
    assert printed[0].replace(f"/{run.info.experiment_id}/", "/<id>/") in page  # docs/experiments.md points to it
    assert (
        runner.client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    )
    ui = request.getfixturevalue("mlflow_ui")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    table = browse(
        printed[0].replace("http://127.0.0.1:5000", ui), tmp_path / "chrome", ARTIFACTS / "mlflow-ui-runs.png"
    )
    assert run.info.run_name in table and "Model registry" in table  # the runs table, in the Model training view
    assert "Judges" not in table and "Evaluation runs" not in table  # not the GenAI view a fresh browser starts in
    run_page = f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    view = "?workflowType=machine_learning"
    overview = browse(run_page + view, tmp_path / "chrome", ARTIFACTS / "mlflow-ui-run.png")
    assert run.info.run_name in overview and "Finished" in overview
    assert all(name in overview for name in ("val_accuracy", "val_loss", "train_loss", "samples_per_second"))
    artifacts = browse(f"{run_page}/artifacts/graph.png{view}", tmp_path / "chrome", ARTIFACTS / "mlflow-ui-graph.png")
    assert '<img alt="graph.png"' in artifacts and "graph.svg" in artifacts
