"""MLflow tracking: one training job is one MLflow run.

Metrics are queued and written by a background thread in batches, so logging
never waits on the database (or on the device: values are converted to floats
in that thread). The default store is an SQLite file under the project root,
whatever Hydra's working directory: `MLFLOW_TRACKING_URI` or `tracking.uri=`
override it.
"""
import logging
import os
import queue
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag

from zkynet import checkpoint

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MAX_PARAMS_PER_CALL = 100  # MLflow's limit for one log_batch
FLUSH_SECONDS = 5.0  # one database transaction per 5 s of training at most

for noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def default_tracking_uri():
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def flatten(config, prefix=""):
    """{"a": {"b": 1}} -> {"a/b": "1"}: MLflow params from a nested config."""
    flat = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "/"))
        else:
            flat[path] = str(value)
    return flat


def experiment_id(client, uri, name):
    """The id of experiment `name`, created if new (with artifacts beside an SQLite store,
    not in the working directory)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by a concurrent job
        return client.get_experiment_by_name(name).experiment_id


class Tracker:
    """An MLflow run: created (or resumed, with `run_id`) on construction, ended by
    `close(status)`. `parent_run_id` makes it a child run (sweeps)."""

    def __init__(self, uri=None, experiment="zkynet", run_name=None, run_id=None, parent_run_id=None,
                 tags=None):
        self.uri = uri or default_tracking_uri()
        self.client = MlflowClient(self.uri)
        if run_id is not None:
            run = self.client.get_run(run_id)
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        else:
            tags = dict(tags or {})
            if parent_run_id:
                tags["mlflow.parentRunId"] = parent_run_id
            run = self.client.create_run(experiment_id(self.client, self.uri, experiment), run_name=run_name,
                                         tags=tags)
        self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        self.artifact_uri = run.info.artifact_uri
        self._queue = queue.Queue()
        self._error = None
        self._writer = threading.Thread(target=self._write_metrics, name="mlflow-metrics", daemon=True)
        self._writer.start()

    def log_params(self, params):
        items = [Param(k, v[:6000]) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[start:start + MAX_PARAMS_PER_CALL])

    def log_metrics(self, metrics, step):
        """Queue metrics (numbers or device arrays) at `step`; returns at once."""
        self._queue.put((step, int(time.time() * 1000), metrics))

    def log_artifact(self, path, artifact_path=None):
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_checkpoint(self, path, artifact_path):
        """Store the checkpoint file at `path` as an artifact, atomically where the artifact
        store is a local folder (a crash mid-write never leaves a truncated file to resume from)."""
        if self.artifact_uri.startswith("file://"):
            checkpoint.copy(path, Path(urlparse(self.artifact_uri).path) / artifact_path)
            return
        with tempfile.TemporaryDirectory() as folder:  # uploaded under artifact_path's own name
            local = Path(folder) / Path(artifact_path).name
            checkpoint.copy(path, local)
            self.log_artifact(local, str(Path(artifact_path).parent))

    def set_tags(self, tags):
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def close(self, status="FINISHED"):
        try:
            self._queue.put(None)
            self._writer.join()
        finally:
            self.client.set_terminated(self.run_id, status)
        if self._error is not None:
            raise RuntimeError(f"MLflow metric logging failed: {self._error}") from self._error

    def _write_metrics(self):
        pending, last_flush = [], time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=FLUSH_SECONDS)
            except queue.Empty:
                item = ()
            done = item is None
            if item:
                step, timestamp, metrics = item
                pending += [Metric(k, float(np.asarray(v)), timestamp, step) for k, v in metrics.items()]
            if pending and (done or time.monotonic() - last_flush >= FLUSH_SECONDS or len(pending) >= 900):
                try:
                    for start in range(0, len(pending), 1000):
                        self.client.log_batch(self.run_id, metrics=pending[start:start + 1000])
                except Exception as e:  # surfaced by close(), never lost silently
                    self._error = e
                pending, last_flush = [], time.monotonic()
            if done:
                return
