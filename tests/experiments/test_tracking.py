"""Tracking pieces in-process: store location, params, async metrics, checkpoints."""

import numpy as np
from mlflow import MlflowClient

from experiments import tracking
from experiments.tracking import Tracker, flatten
from zkynet import checkpoint


def test_default_store_is_under_the_project_root_unless_the_environment_says(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.default_tracking_uri() == f"sqlite:///{tracking.PROJECT_ROOT / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:5000")
    assert tracking.default_tracking_uri() == "http://localhost:5000"


def test_flatten_config():
    assert flatten({"model": {"widths": [1, 2], "act": "relu"}, "seed": 0, "empty": {}}) == {
        "model/widths": "[1, 2]",
        "model/act": "relu",
        "seed": "0",
        "empty": "{}",
    }


def test_params_in_batches_metrics_async_and_status(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(store, "unit", run_name="r")
    tracker.log_params({f"p{i}": str(i) for i in range(250)})  # more than one batch of 100
    for step in range(30):
        tracker.log_metrics({"loss": np.float32(1.0 / (step + 1))}, step)
    tracker.close("FINISHED")
    client = MlflowClient(store)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and len(run.data.params) == 250
    assert [m.step for m in client.get_metric_history(tracker.run_id, "loss")] == list(range(30))
    location = client.get_experiment_by_name("unit").artifact_location
    assert location == (tmp_path / "mlartifacts").as_uri()  # artifacts beside the database, not in the cwd


def test_checkpoint_artifact_is_written_in_place(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "unit")
    checkpoint.save(tmp_path / "last.npz", {"params": {"w": np.arange(3.0)}})
    tracker.log_checkpoint(tmp_path / "last.npz", "checkpoints/last.npz")
    tracker.close()
    path = MlflowClient(tracker.uri).download_artifacts(tracker.run_id, "checkpoints/last.npz", str(tmp_path))
    np.testing.assert_array_equal(checkpoint.load(path)["params"]["w"], np.arange(3.0))


def test_a_child_run_stays_in_its_parents_experiment_and_experiments_are_for_training(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = Tracker(store, "classification")
    child = Tracker(store, "reconstruction", parent_run_id=parent.run_id)  # a sweep's trial of another task
    assert child.experiment_id == parent.experiment_id and child.experiment == "classification"
    client = MlflowClient(store)
    assert client.get_experiment(parent.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment_by_name("reconstruction") is None
    child.close()
    parent.close()
