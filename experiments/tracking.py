"""MLflow tracking: one training run is one MLflow run.

Metrics are queued and written by a background thread in batches, so logging
never waits on the database (or on the device: values become floats in that
thread). `flush()` writes everything queued so far and raises if the store
refused it: a run's metrics reach the store before a checkpoint that covers
them, and a store that cannot be written fails the run loudly. The default
store is an SQLite file under the project root, whatever the working
directory: `MLFLOW_TRACKING_URI` or `tracking.uri=` override it.
"""

import fcntl
import importlib.metadata
import logging
import os
import queue
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import jax
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from experiments import lineage
from zkynet import checkpoint
from zkynet.training import Callback, TrainingLoop

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MAX_PARAMS_PER_CALL = 100  # MLflow's limit for one log_batch
FLUSH_SECONDS = 5.0  # one database transaction per 5 s of training at most
PROBE_SECONDS = 5.0
CORE_REQUIREMENTS = ("jax", "jaxlib", "numpy", "graphviz")  # what a logged model needs besides zkynet itself
# how MLflow behaves in this process (read when it makes a request), unless the environment says otherwise
MLFLOW_ENVIRONMENT = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",  # MLflow's default retries for ~4 minutes
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # our own progress is enough
}
COMPILE_SECONDS = "compile_seconds"  # in every epoch's record; logged once per run (per resumed fit)
QUIET_LOGGERS = ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent", "mlflow.pyfunc")


class TrackingError(RuntimeError):
    """The MLflow store cannot be reached or written; the message names it."""


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


def configure_mlflow() -> None:
    """Set up this process for MLflow: request retries and timeouts that fail within
    minutes, no progress bars, quiet loggers. Every client comes from `connect`, which
    calls this first; doing it again changes nothing."""
    for name, value in MLFLOW_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def connect(uri):
    """An MlflowClient on `uri`, checked to answer: a tracking server within seconds,
    an SQLite file created (or migrated) by one process at a time."""
    configure_mlflow()
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_SECONDS).close()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(
                f"cannot reach the MLflow tracking server at {uri} ({reason}); start it "
                "(mlflow server ...) or choose another tracking.uri"
            ) from None
    try:
        with _store_lock(uri):
            client = MlflowClient(uri)  # MLflow creates and migrates a new SQLite store here...
            client.search_experiments(max_results=1)  # ...or here, in older versions
    except Exception as e:
        raise TrackingError(f"cannot use the MLflow store {uri}: {type(e).__name__}: {e}") from e
    return client


@contextmanager
def _store_lock(uri):
    """An exclusive lock beside an SQLite store: MLflow's schema migration of a new file
    fails when two processes run it at once."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri[len("sqlite:///") :])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def experiment_id(client, uri, name):
    """The id of experiment `name`, created if new (with artifacts beside an SQLite store,
    not in the working directory), tagged as a model-training experiment (lineage.TRAINING)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
        with _store_lock(uri):
            experiment = client.get_experiment_by_name(name)  # created meanwhile by a concurrent run?
            if experiment is None:
                return client.create_experiment(
                    name, artifact_location=location, tags={lineage.EXPERIMENT_KIND: lineage.TRAINING}
                )
    if lineage.EXPERIMENT_KIND not in experiment.tags:  # made before zkynet tagged its experiments
        client.set_experiment_tag(experiment.experiment_id, lineage.EXPERIMENT_KIND, lineage.TRAINING)
    return experiment.experiment_id


class Tracker:
    """An MLflow run: created on construction (or, with `run_id`, continued: metric
    steps it already holds are not logged again), ended by `close(status)`.
    `parent_run_id` makes it a child run (a sweep's trial), in its parent's experiment
    whatever `experiment` says (a trial of another task). The run is tagged with
    this process's host and pid, and a heartbeat every minute. With `system_metrics`
    (seconds), MLflow samples CPU, memory, disk, network and (with nvidia-ml-py) GPU
    use that often, as system/* metrics."""

    def __init__(
        self,
        uri=None,
        experiment="zkynet",
        run_name=None,
        run_id=None,
        parent_run_id=None,
        tags=None,
        client=None,
        system_metrics=None,
    ):
        self.uri = uri or default_tracking_uri()
        self.client = client or connect(self.uri)
        self.ended = False  # whether the run's end (its status) reached the store
        self._logged_through = {}
        if run_id is not None:
            run = self.client.get_run(run_id)
            self.previous_status = run.info.status
            self._logged_through = {
                key: max(m.step for m in self.client.get_metric_history(run_id, key)) for key in run.data.metrics
            }
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        else:
            tags = {
                **(tags or {}),
                **({lineage.PARENT: parent_run_id} if parent_run_id else {}),
                **lineage.owner_tags(),
            }
            home = (
                self.client.get_run(parent_run_id).info.experiment_id
                if parent_run_id
                else experiment_id(self.client, self.uri, experiment)
            )
            run = self.client.create_run(home, run_name=run_name, tags=tags)
            self.previous_status = None
        self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        self.experiment = self.client.get_experiment(self.experiment_id).name
        self.artifact_uri = run.info.artifact_uri
        if run_id is not None:  # (a new run has them from its creation)
            self.set_tags(lineage.owner_tags())
        self._queue: queue.Queue = queue.Queue()
        self._error = None
        self._writer = threading.Thread(target=self._write_metrics, name="mlflow-metrics", daemon=True)
        self._writer.start()
        self._system = None
        if system_metrics is not None:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._system = SystemMetricsMonitor(
                self.run_id, system_metrics, resume_logging=run_id is not None, tracking_uri=self.uri
            )
            self._system.start()

    def log_params(self, params):
        items = [Param(k, v[:6000]) for k, v in params.items()]
        with self.writing("params"):
            for start in range(0, len(items), MAX_PARAMS_PER_CALL):
                self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_PER_CALL])

    @contextmanager
    def writing(self, what):
        """The store's failures to write `what` as TrackingError naming the store (a full
        disk, a read-only artifact folder): what to fix, not a traceback of MLflow's."""
        try:
            yield
        except TrackingError:
            raise
        except (OSError, MlflowException) as e:
            where = self.artifact_uri if what.startswith("artifact") else self.uri
            raise TrackingError(
                f"cannot write the {what} of run {self.run_id} to {where}: {type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''} (is the disk full, or the folder "
                "read-only? free it or choose another tracking.uri)"
            ) from e

    def log_metrics(self, metrics, step):
        """Queue metrics (numbers or device arrays) at `step`; returns at once."""
        self._queue.put((step, int(time.time() * 1000), metrics))

    def flush(self):
        """Write every metric queued so far; raises TrackingError if the store refused."""
        done = threading.Event()
        self._queue.put(done)
        while not done.wait(1.0):
            if not self._writer.is_alive():
                break
        if self._error is not None:
            raise TrackingError(
                f"could not write metrics to the MLflow store {self.uri}: {type(self._error).__name__}: {self._error}"
            ) from self._error

    def log_artifact(self, path, artifact_path=None):
        with self.writing(f"artifact {Path(path).name}"):
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_checkpoint(self, path, artifact_path=lineage.CHECKPOINT):
        """Store the checkpoint file at `path`, after the metrics it covers. Atomically
        where the artifact store is a local folder (a crash mid-write never leaves a
        truncated file to resume from)."""
        self.flush()
        if self.artifact_uri.startswith("file://"):
            with self.writing(f"artifact {artifact_path}"):
                checkpoint.copy(path, Path(urlparse(self.artifact_uri).path) / artifact_path)
            return
        with tempfile.TemporaryDirectory() as folder:  # uploaded under artifact_path's own name
            local = Path(folder) / Path(artifact_path).name
            checkpoint.copy(path, local)
            self.log_artifact(local, str(Path(artifact_path).parent))

    def log_model(self, folder, example, output, registered_name=None):
        """The zkynet model saved in `folder` (zkynet.saved_model) as this run's MLflow
        model: pyfunc flavor, a signature from `example` inputs and their `output`, the
        example itself; registered as a new version of `registered_name` if given.
        Requirements are named, not inferred (inferring loads the model once more)."""
        import mlflow
        from mlflow.models import Model, infer_signature
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        requirements = [f"{name}=={importlib.metadata.version(name)}" for name in CORE_REQUIREMENTS]
        # in this run's experiment (left to itself, Model.log picks MLflow's default one, under ./mlruns)
        logged = self.client.create_logged_model(
            self.experiment_id, name=lineage.MODEL_ARTIFACT, source_run_id=self.run_id
        )
        environment = os.environ.get("MLFLOW_TRACKING_URI")  # _use_tracking_uri unsets it when done
        try:
            with _use_tracking_uri(self.uri):  # Model.log reads MLflow's global tracking URI
                return Model.log(
                    None,
                    mlflow.pyfunc,
                    name=lineage.MODEL_ARTIFACT,
                    run_id=self.run_id,
                    model_id=logged.model_id,
                    loader_module="zkynet.saved_model",
                    data_path=str(folder),
                    signature=infer_signature(example, output),
                    input_example=example,
                    pip_requirements=requirements,
                    registered_model_name=registered_name,
                )
        finally:
            if environment is not None:
                os.environ["MLFLOW_TRACKING_URI"] = environment

    def set_tags(self, tags):
        with self.writing("tags"):
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def close(self, status="FINISHED"):
        """Write what is queued and end the run with `status` (FAILED instead if the
        metrics could not be written: then TrackingError is raised)."""
        self._stop_system_metrics()
        error = None
        try:
            self.flush()
        except TrackingError as e:
            status, error = "FAILED", e
        self._queue.put(None)
        self._writer.join()
        try:
            self.client.set_terminated(self.run_id, status)
            self.ended = True
        except Exception as e:
            raise TrackingError(
                f"could not end run {self.run_id} as {status} in the MLflow store {self.uri} "
                f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}): it stays RUNNING "
                "there until the next zkynet run on this store (or trainer.resume) ends it"
            ) from (error or e)
        if error is not None:
            raise error

    def restore_status(self):
        """End a continued run with the status it had before (a resume that failed
        before training anything changes nothing)."""
        self._stop_system_metrics()
        self._queue.put(None)
        self._writer.join()
        self.client.update_run(self.run_id, status=self.previous_status)
        self.ended = True

    def _stop_system_metrics(self):
        if self._system is not None:
            self._system.finish()  # its last samples written while the run still takes them
            self._system = None

    def _write_metrics(self):
        pending, last_flush, last_beat = [], time.monotonic(), time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=FLUSH_SECONDS)
            except queue.Empty:
                item = ()
            if isinstance(item, tuple) and item:
                step, timestamp, metrics = item
                values = jax.device_get(dict(metrics))  # device scalars fetched together, not one by one
                pending += [
                    Metric(k, float(np.asarray(v)), timestamp, step)
                    for k, v in values.items()
                    if step > self._logged_through.get(k, -1)
                ]
            now = time.monotonic()
            if pending and (not isinstance(item, tuple) or now - last_flush >= FLUSH_SECONDS or len(pending) >= 900):
                try:
                    for start in range(0, len(pending), 1000):
                        self.client.log_batch(self.run_id, metrics=pending[start : start + 1000])
                except Exception as e:  # raised by flush() and close(): never lost silently
                    self._error = e
                pending, last_flush = [], now
            if now - last_beat >= lineage.HEARTBEAT_SECONDS:
                last_beat = now
                try:
                    self.set_tags({lineage.HEARTBEAT: f"{time.time():.0f}"})
                except Exception as e:
                    self._error = self._error or e
            if isinstance(item, threading.Event):
                item.set()
            elif item is None:
                return


class MetricsLogger(Callback):
    """Sends a training run to its Tracker: per-batch metrics every `every` steps, the
    metrics callbacks log (`trainer.log`), every epoch's record (`compile_seconds` once,
    after the first epoch), and each checkpoint (after the metrics it covers). Put it
    first: the epoch's record is queued before any callback can save a checkpoint that
    covers it; `tail()` (put after your callbacks) logs what they added to the record."""

    def __init__(self, tracker, every):
        self.tracker, self.every = tracker, max(1, every)
        self._compile_logged = False
        self._logged: set = set()  # the keys of this epoch's record logged already

    def on_fit_start(self, trainer):
        self._compile_logged = False

    def on_step(self, trainer, metrics):
        if trainer.step % self.every == 0:
            self.tracker.log_metrics({f"batch_{k}": v for k, v in metrics.items()}, trainer.step)

    def on_log(self, trainer, metrics, step):
        self.tracker.log_metrics(dict(metrics), step)

    def on_epoch_end(self, trainer, epoch, record):
        metrics = {k: v for k, v in record.items() if k != COMPILE_SECONDS or not self._compile_logged}
        self._compile_logged = self._compile_logged or COMPILE_SECONDS in record
        self._logged = set(record)
        self.tracker.log_metrics(metrics, trainer.step)

    def on_checkpoint(self, trainer, path, meta):
        self.tracker.log_checkpoint(path)

    def tail(self):
        """The callback that logs the metrics callbacks before it added to the record."""
        return _RecordTail(self)


class _RecordTail(Callback):
    def __init__(self, logger):
        self.logger = logger

    def on_epoch_end(self, trainer, epoch, record):
        added = {k: v for k, v in record.items() if k not in self.logger._logged}
        self.logger._logged |= set(added)
        if added:
            self.logger.tracker.log_metrics(added, trainer.step)


class BestCheckpointLogger(Callback):
    """Stores `best`'s file (a BestCheckpoint) in the run each epoch it saves one: placed
    before the Checkpointer, the best epoch's state is in the store before a last
    checkpoint that says which epoch was best, so a resumed run finds it."""

    def __init__(self, tracker, best):
        self.tracker, self.best = tracker, best

    def on_epoch_end(self, trainer, epoch, record):
        if self.best.best_epoch == record["epoch"] and Path(self.best.path).exists():
            self.tracker.log_checkpoint(self.best.path, lineage.BEST_CHECKPOINT)


def tracker_of(trainer: TrainingLoop) -> Tracker | None:
    """The Tracker a run's callbacks log to (its MetricsLogger's), or None when the run
    is not tracked."""
    return next((c.tracker for c in trainer.callbacks if isinstance(c, MetricsLogger)), None)


class _ActiveRuns:
    """How many runs are active in this process, and MLflow's tracking URI (and
    $MLFLOW_TRACKING_URI) from before the first."""

    lock = threading.Lock()
    count = 0
    before: tuple[str | None, str | None] = (None, None)


@contextmanager
def active(tracker: Tracker):
    """The tracker's run as MLflow's active run in this thread, and its store as MLflow's
    tracking URI in this process, for the block: `mlflow.log_metric(...)` in a callback
    lands in the run, never in a new run of MLflow's default experiment. Afterwards
    MLflow's tracking URI (and $MLFLOW_TRACKING_URI) are what they were; the run's status
    is the Tracker's business (leaving the block does not end it)."""
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    with _ActiveRuns.lock:
        if _ActiveRuns.count == 0:
            _ActiveRuns.before = (utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI"))
        _ActiveRuns.count += 1
        mlflow.set_tracking_uri(tracker.uri)
    run = None
    try:
        run = mlflow.start_run(run_id=tracker.run_id, nested=True, log_system_metrics=False)
    except Exception as e:  # e.g. the caller's mlflow.set_experiment names another experiment
        print(f"warning: mlflow.log_* in callbacks will not reach run {tracker.run_id}: {e}", file=sys.stderr)
    try:
        yield
    finally:
        stack = fluent._active_run_stack.get()  # leave the run to the Tracker: no end_run(), which ends it
        if run is not None and run in stack:
            stack.remove(run)
        with _ActiveRuns.lock:
            _ActiveRuns.count -= 1
            if _ActiveRuns.count == 0:
                uri, environment = _ActiveRuns.before
                utils._tracking_uri = None  # set_tracking_uri(None) would leave a mark in os.environ
                if uri is not None:
                    utils.set_tracking_uri(uri)
                if environment is None:
                    os.environ.pop("MLFLOW_TRACKING_URI", None)
                else:
                    os.environ["MLFLOW_TRACKING_URI"] = environment
