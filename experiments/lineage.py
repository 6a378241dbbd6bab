"""Every name this project writes into MLflow, and every lookup that reads them
back: run tags, artifact paths, a sweep's run and its trials, earlier attempts
of a trial, what a run needs to be resumed, and whether a RUNNING run is alive."""

import os
import secrets
import socket
import subprocess
import tempfile
import time

from mlflow.entities import RunTag
from omegaconf import OmegaConf

from zkynet import checkpoint

# tags of a training run
HOST, PID, HEARTBEAT = "host", "pid", "heartbeat"  # who runs it, and when it last said so (unix seconds)
ERROR, ARTIFACT_ERROR = "error", "artifact_error"  # the last line of a failure; a picture that could not be drawn
MODEL, DATASET, PARAMETERS = "model", "dataset", "parameters"
OVERRIDES = "overrides"  # the command-line overrides that made its config
ATTEMPTS = "attempts"  # how many processes have trained it (a retried sweep trial: 2, ...)
PARENT = "mlflow.parentRunId"
GIT_COMMIT, GIT_DIRTY = "mlflow.source.git.commit", "git_dirty"  # the code it ran: MLflow shows the commit
# tags of an experiment: MLflow 3's UI shows a training experiment's runs table, not its GenAI (traces) view
EXPERIMENT_KIND, TRAINING = "mlflow.experimentKind", "custom_model_development"
# tags of a sweep's run and its trials
SWEEP = "sweep"  # on the sweep's run: its output folder
SWEEP_JOB = "sweep_job"  # on a trial's run: its number in the sweep
STOPPED_EARLY, STOPPED_AT_EPOCH = (
    "stopped_early",
    "stopped_at_epoch",
)  # a trial the scheduler (or early stopping) stopped
BEST_EPOCH = "best_epoch"  # the epoch best by the monitored metric (early stopping, best checkpoint)
MODEL_EPOCH = "model_epoch"  # the epoch whose weights are the run's model (the best one when monitored)
BEST_RUN = "best_run"
NODE, NODES, GPUS = "node", "nodes", "gpus"  # on a sweep's trial: the Ray node it (last) ran on, all, its GPU ids
DEVICE_ENVIRONMENT = "device_environment"  # ...and how its JAX was told to use them (CUDA_VISIBLE_DEVICES, ...)
RESUMABLE = "resumable"  # on a FAILED trial: its worker, not its training, failed (a resume runs it again)
RESULTS = "results"  # on a sweep's trial: "deferred" (its curves, samples, model: drawn when the sweep ends, if
# it is the best), then "logged"

# artifacts
CONFIG = "config/config.yaml"
CHECKPOINT, BEST_CHECKPOINT = "checkpoints/last.npz", "checkpoints/best.npz"
GRAPH, GRAPH_SVG, CURVES, ERROR_FILE, SWEEP_TABLE = "graph.png", "graph.svg", "curves.png", "error.txt", "sweep.md"
MODEL_ARTIFACT = "model"  # the MLflow model (pyfunc): runs:/<run id>/model

HEARTBEAT_SECONDS = 60.0  # a RUNNING run silent for several of these is presumed dead


def ui_url(experiment_id, run_id=None, server="http://127.0.0.1:5000"):
    """The MLflow UI's page of an experiment's runs table (or of one run) in its Model
    training view: MLflow 3 opens in its GenAI view, chosen in the browser (localStorage),
    unless the URL asks for workflowType=machine_learning."""
    page = f"#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    return f"{server}/{page}?workflowType=machine_learning"


def run_name(model, dataset):
    """A default run name, unique among runs: `mlp-digits-3fa2c1`."""
    return f"{model}-{dataset}-{secrets.token_hex(3)}"


def source_tags(root):
    """The git commit of the code at `root` and whether tracked files had uncommitted
    changes then (git_dirty true: the commit alone does not reproduce the run); {} outside git."""

    def git(*arguments):
        return subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True, timeout=30)

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if commit.returncode != 0 or status.returncode != 0:
        return {}
    return {GIT_COMMIT: commit.stdout.strip(), GIT_DIRTY: str(bool(status.stdout.strip())).lower()}


def tag_source(client, run_id, root):
    """Tag run `run_id` (a sweep's) with the git commit of the code at `root`, unless it
    has one: a sweep's run then says which code its trials ran."""
    if GIT_COMMIT not in client.get_run(run_id).data.tags:
        tags = source_tags(root)
        if tags:
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def owner_tags():
    return {HOST: socket.gethostname(), PID: str(os.getpid()), HEARTBEAT: f"{time.time():.0f}"}


def is_alive(run):
    """Whether the process training a RUNNING `run` may still be alive: its pid exists on
    this host, or (another host) its heartbeat is recent."""
    if run.info.status != "RUNNING":
        return False
    tags = run.data.tags
    if tags.get(HOST) == socket.gethostname() and tags.get(PID, "").isdigit():
        try:
            os.kill(int(tags[PID]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    beat = float(tags.get(HEARTBEAT) or 0)
    return time.time() - beat < 3 * HEARTBEAT_SECONDS


def best_checkpoint(client, run_id):
    """Run `run_id`'s best checkpoint (a state dict), or None if it keeps none."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run_id, BEST_CHECKPOINT, folder)
        except Exception:
            return None
        return checkpoint.load(path)


EPOCH_METRICS = ("epoch", "train_", "val_", "samples_per_second")  # what a Trainer's epoch record holds


def epoch_history(client, run_id):
    """The epoch records run `run_id` logged, in order (earlier attempts' too): what a
    Trainer's history holds, read back from the store."""
    run = client.get_run(run_id)
    steps: dict[int, dict] = {}
    for key in run.data.metrics:
        if key.startswith(EPOCH_METRICS):
            for metric in client.get_metric_history(run_id, key):
                steps.setdefault(metric.step, {})[key] = metric.value
    records = [{**values, "epoch": int(values["epoch"])} for _, values in sorted(steps.items()) if "epoch" in values]
    return records


def logged_models(client, run):
    """The MLflow models logged by run `run` under MODEL_ARTIFACT, newest first."""
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"name = '{MODEL_ARTIFACT}' AND source_run_id = '{run.info.run_id}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}],
    )
    return list(found)


def stored_config_and_checkpoint(client, run_id):
    """(the resolved config run `run_id` started with, its last checkpoint or None)."""
    from experiments.schema import ConfigError

    with tempfile.TemporaryDirectory() as folder:
        try:
            config = OmegaConf.load(client.download_artifacts(run_id, CONFIG, folder))
        except Exception as e:
            raise ConfigError(
                f"run {run_id} has no stored configuration ({CONFIG}): it stopped before it began (or its "
                f"artifacts are gone: {type(e).__name__}); there is nothing to continue: start a new run"
            ) from None
        try:
            path = client.download_artifacts(run_id, CHECKPOINT, folder)
        except Exception:  # it stopped before its first checkpoint
            return config, None
        try:
            return config, checkpoint.load(path)
        except checkpoint.CheckpointError as e:  # name the run's file, not this temporary copy
            raise checkpoint.CheckpointError(str(e).replace(path, f"run {run_id}'s {CHECKPOINT}")) from None


def sweep_run(client, experiment_ids, sweep_dir):
    """The MLflow run of the sweep writing to `sweep_dir` (in one experiment id or any of a
    list), or None."""
    ids = [experiment_ids] if isinstance(experiment_ids, str) else experiment_ids
    found = client.search_runs(
        ids, max_results=1, order_by=["attributes.start_time DESC"], filter_string=f"tags.{SWEEP} = '{sweep_dir}'"
    )
    return found[0] if found else None


def trials(client, sweep):
    """The child runs of sweep run `sweep`."""
    return client.search_runs(
        [sweep.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{sweep.info.run_id}'"
    )


def earlier_attempt(client, sweep_run_id, job):
    """The run of an earlier, unfinished attempt at trial `job` of a sweep, or None."""
    parent = client.get_run(sweep_run_id)
    found = client.search_runs(
        [parent.info.experiment_id],
        max_results=1,
        filter_string=f"tags.mlflow.parentRunId = '{sweep_run_id}' and "
        f"tags.{SWEEP_JOB} = '{job}' and attributes.status != 'FINISHED'",
    )
    return found[0] if found else None
