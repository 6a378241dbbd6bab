"""Running the CLI as a user does, against a throwaway MLflow store; a Ray cluster
started as users start one, shared by the sweeps of one test process."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow import MlflowClient

ROOT = Path(__file__).parents[2]


def new_store(folder, empty_store):
    """The URI of a new, empty MLflow store in `folder` (a copy of `empty_store`: creating
    a store's tables takes seconds, copying them milliseconds); one already there is kept."""
    path = folder / "mlflow.db"
    if not path.exists():
        shutil.copyfile(empty_store, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory):
    """A new MLflow store's file, its tables created once per test process."""
    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # creates the tables
    return path


class Cli:
    def __init__(self, folder, empty_store):
        self.folder = folder
        self.store = new_store(folder, empty_store)
        self.client = MlflowClient(self.store)
        self.count = 0

    def args(self, *overrides):
        """The command line; `-m` among the overrides makes it a sweep."""
        self.count += 1
        output = self.folder / "outputs" / str(self.count)
        if "-m" in overrides:
            return [
                sys.executable,
                "-m",
                "experiments.run",
                "-m",
                f"tracking.uri={self.store}",
                f"hydra.sweep.dir={output}",
                *(o for o in overrides if o != "-m"),
            ]
        return [
            sys.executable,
            "-m",
            "experiments.run",
            f"tracking.uri={self.store}",
            f"hydra.run.dir={output}",
            *overrides,
        ]

    def __call__(self, *overrides, env=None, timeout=900):
        return subprocess.run(self.args(*overrides), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    def start(self, *overrides, env=None):
        return subprocess.Popen(
            self.args(*overrides), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def runs(self, experiment=None):
        """The runs of `experiment` (a name), or of every experiment, oldest first."""
        found = [self.client.get_experiment_by_name(experiment)] if experiment else self.client.search_experiments()
        ids = [e.experiment_id for e in found if e is not None]
        return self.client.search_runs(ids, order_by=["attributes.start_time ASC"]) if ids else []

    def artifacts(self, run_id, path=None):
        files = {}
        for item in self.client.list_artifacts(run_id, path):
            if item.is_dir:
                files.update(self.artifacts(run_id, item.path))
            else:
                files[item.path] = item.file_size
        return files


@pytest.fixture
def cli(tmp_path, empty_store):
    return Cli(tmp_path, empty_store)


class Runner:
    """`experiments.runner.run` in this process, on configs composed as the command
    line composes them (Hydra's compose API), against a throwaway MLflow store."""

    def __init__(self, folder, empty_store):
        self.folder = folder
        self.store = new_store(folder, empty_store)
        self.client = MlflowClient(self.store)
        self.count = 0

    def config(self, *overrides):
        from hydra import compose, initialize_config_dir
        from omegaconf import open_dict

        from experiments import schema

        schema.register()
        self.count += 1
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[f"tracking.uri={self.store}", "trainer.progress=false", *overrides])
        with open_dict(cfg):  # what the entry point adds from Hydra's runtime
            cfg.output_dir = str(self.folder / "outputs" / str(self.count))
            cfg.launch.overrides = list(overrides)
        return cfg

    def __call__(self, *overrides):
        from experiments.runner import run

        return run(self.config(*overrides))

    runs = Cli.runs
    artifacts = Cli.artifacts


@pytest.fixture
def runner(tmp_path, empty_store):
    return Runner(tmp_path, empty_store)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RAY_CLUSTER_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


@contextmanager
def ray_head(num_cpus=2, num_gpus=0, env=None):
    """A Ray cluster started with `ray start --head` (`num_gpus` it declares, whether it has
    them or not: Ray then hands them out as on real hardware), in a folder of its own; its
    address. Stopped afterwards, and nothing else on the machine."""
    port = free_port()
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    session = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # this cluster's own (short: socket paths) folder
    head = subprocess.run(
        [
            ray,
            "start",
            "--head",
            f"--port={port}",
            f"--num-cpus={num_cpus}",
            f"--num-gpus={num_gpus}",
            "--disable-usage-stats",
            "--include-dashboard=false",  # its processes cost seconds of CPU to start; no test opens it
            f"--temp-dir={session}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert head.returncode == 0, head.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:  # stop this cluster, and nothing else on the machine
        subprocess.run(["pkill", "-9", "-f", session], capture_output=True)
        for pid in _holding(session):  # its agents, whose process titles do not name the folder
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(session, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray cluster started with `ray start --head`, as users start one; its address. One
    per test process (pytest-xdist worker), shared by the sweeps that do not test starting
    a local Ray: each such sweep saves a Ray start and stop (about ten seconds on 2 cores).
    It uses token authentication, as docs/sweeps.md starts one, with its own token (not the
    machine's ~/.ray/auth_token): its sweeps need `RAY_CLUSTER_AUTH` in their environment."""
    with ray_head(env=RAY_CLUSTER_AUTH) as address:
        yield address


def _holding(folder):
    """The processes with a file open under `folder`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(folder) for fd in os.listdir(f"/proc/{pid}/fd")):
                yield int(pid)
        except OSError:  # it ended meanwhile, or is not ours to read
            continue


@pytest.fixture
def on_cluster(ray_cluster):
    """(overrides, env) that run a sweep's trials on the shared cluster instead of a local Ray."""
    return (f"hydra.sweeper.ray.address={ray_cluster}",), {**os.environ, "PYTHONPATH": str(ROOT), **RAY_CLUSTER_AUTH}


@contextmanager
def mlflow_server_on(store, artifacts, serve_artifacts=False):
    """An MLflow tracking server on `store` (as trials on other machines need one); its URI.
    Artifacts go to the folder `artifacts`: read directly by its clients, or with
    `serve_artifacts` only through the server (as machines without a shared disk read them)."""
    port = free_port()
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    where = (
        ["--serve-artifacts", "--artifacts-destination", artifacts.as_uri()]
        if serve_artifacts
        else ["--no-serve-artifacts", "--default-artifact-root", artifacts.as_uri()]
    )
    # without MLflow's job runner (GenAI jobs, which no test uses): its processes take seconds to start
    # and about ten to stop on 2 cores
    server = subprocess.Popen(
        [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + ["--backend-store-uri", store, *where],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError(f"mlflow server did not answer at {uri}")
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture
def mlflow_server(cli, tmp_path):
    """A tracking server on the test's store; artifacts in a folder the test reads directly."""
    with mlflow_server_on(cli.store, tmp_path / "server-artifacts") as uri:
        yield uri
