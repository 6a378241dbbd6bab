"""Where `zkynet.load(<run id>)` finds a run's model: MLflow stores, asked with
timeouts. Imported only for run ids and runs:/ or models:/ URIs (it imports MLflow).

MLflow 3 keeps a run's model as a *logged model* (`models:/m-<id>`), which it
resolves through the tracking URI set process-wide, whatever URI the call was
given; so each lookup points MLflow at the store it searches for the time of the
call, and puts back what was there (the URI, $MLFLOW_TRACKING_URI) afterwards.
"""

import os
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from zkynet import checkpoint

PROJECT_STORE = Path(__file__).resolve().parents[1] / "mlflow.db"  # where experiments.run writes by default
PROBE_SECONDS = 5.0
# how MLflow asks a tracking server while we look (unless the environment says otherwise): seconds, not minutes
QUICK = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
LAST_CHECKPOINT = "checkpoints/last.npz"


def candidates():
    """The stores to search, in order: $MLFLOW_TRACKING_URI alone if set; else the
    mlflow.db of the working directory or the nearest folder above it, and the
    project's own store."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return [os.environ["MLFLOW_TRACKING_URI"]]
    found = [folder / "mlflow.db" for folder in (Path.cwd(), *Path.cwd().parents) if (folder / "mlflow.db").exists()]
    stores = [found[0]] if found else []
    if PROJECT_STORE.exists() and PROJECT_STORE not in stores:
        stores.append(PROJECT_STORE)
    return [f"sqlite:///{path}" for path in stores]


def download(source, uri, folder, which):
    """(the local model folder, the last checkpoint's params or None) for `source` (a runs:/
    or models:/ URI) from store `uri`; or a string saying why it is not there. Raises
    when the store cannot be asked at all (a server that does not answer), or when the
    run is there without a model."""
    unavailable = _unavailable(uri)
    if unavailable:
        return unavailable
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with _mlflow_at(uri):
        client = MlflowClient(uri)
        try:
            run_id = _run_of(client, source)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return f"no {'such model version' if source.startswith('models:/') else 'such run'}"
            raise ConnectionError(f"zkynet.load: the MLflow store {uri} failed: {_first_line(e)}") from e
        import mlflow

        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(folder), tracking_uri=uri)
        except Exception as e:
            raise FileNotFoundError(
                f"zkynet.load: run {run_id} is in the MLflow store {uri} but has no model at {source} "
                f"({_first_line(e)}): it failed or was stopped before logging one; `python -m experiments.run "
                f"trainer.resume={run_id}` completes it"
            ) from None
        last = None
        if which == "last":
            try:
                path = client.download_artifacts(run_id, LAST_CHECKPOINT, str(folder))
            except Exception as e:
                raise FileNotFoundError(
                    f"zkynet.load: run {run_id} has no last checkpoint ({LAST_CHECKPOINT}: {_first_line(e)})"
                ) from None
            last = checkpoint.load(path)["params"]
    return Path(local), last


def _run_of(client, source):
    """The run whose model `source` names (looked up: raises if it is not in the store)."""
    if source.startswith("runs:/"):
        run_id = source[len("runs:/") :].split("/", 1)[0]
        client.get_run(run_id)
        return run_id
    name, _, version = source[len("models:/") :].partition("/")
    return client.get_model_version(name, version).run_id


def _unavailable(uri):
    """Why store `uri` cannot hold anything (a database file that is not there), or None;
    raises ConnectionError for a tracking server that does not answer."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        return None if path.exists() else "no such database file"
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_SECONDS).close()
        except (urllib.error.URLError, OSError) as e:
            raise ConnectionError(
                f"zkynet.load: cannot reach the MLflow tracking server at {uri} within {PROBE_SECONDS:.0f} s "
                f"({getattr(e, 'reason', e)}); start it, or pass another tracking_uri"
            ) from None
        return None
    if (
        "://" in uri
        and not uri.startswith(("file://", "databricks://"))
        and not uri.split("://")[0].startswith(("postgresql", "mysql", "mssql", "sqlite"))
    ):
        raise ValueError(
            f"zkynet.load: {uri} is not an MLflow store URI (sqlite:///path/mlflow.db, http://host:port, "
            "a database URL, or a folder)"
        )
    return None


@contextmanager
def _mlflow_at(uri):
    """MLflow pointed at `uri` (and quick to give up on a server) for the block only."""
    from mlflow.tracking._tracking_service import utils

    names = ("MLFLOW_TRACKING_URI", *QUICK)
    environment: dict[str, str | None] = {name: os.environ.get(name) for name in names}
    before = utils._tracking_uri
    for name, quick in QUICK.items():
        os.environ.setdefault(name, quick)
    utils.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils._tracking_uri = None
        if before is not None:
            utils.set_tracking_uri(before)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
