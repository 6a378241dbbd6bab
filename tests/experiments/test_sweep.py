"""-m sweeps on Ray, end to end, checked through MLflow's client."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from experiments.sweep import job_resources, rank

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_job_resources():
    cpu = job_resources({"num_cpus": 1, "num_gpus": "auto"}, cluster_gpus=0)
    assert cpu["num_gpus"] == 0 and cpu["runtime_env"]["env_vars"]["JAX_PLATFORMS"] == "cpu"
    gpu = job_resources({"num_gpus": "auto", "runtime_env": {"env_vars": {"XLA_PYTHON_CLIENT_MEM_FRACTION": ".2"}}},
                        cluster_gpus=4)
    assert gpu["num_gpus"] == 1 and gpu["runtime_env"]["env_vars"] == {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "JAX_PLATFORMS": "cuda", "XLA_PYTHON_CLIENT_MEM_FRACTION": ".2"}
    assert job_resources({"num_gpus": 0.25}, cluster_gpus=1)["num_gpus"] == 0.25


class FakeRun:
    def __init__(self, job, status, metrics, overrides):
        self.data = type("Data", (), {"metrics": metrics, "tags": {"sweep_job": str(job), "overrides": overrides}})
        self.info = type("Info", (), {"status": status, "run_id": f"run{job}"})


def test_ranking_puts_the_best_first_and_failures_last():
    runs = [FakeRun(0, "FINISHED", {"val_loss": 0.5, "val_accuracy": 0.8}, "lr=1 epochs=2"),
            FakeRun(1, "FAILED", {}, "lr=9 epochs=2"),
            FakeRun(2, "FINISHED", {"val_loss": 0.2, "val_accuracy": 0.7}, "lr=2 epochs=2")]
    table, best = rank(runs, "val_loss", "min")
    assert best.info.run_id == "run2" and table.splitlines()[0] == "all jobs: epochs=2"
    assert [line.split("|")[2].strip() for line in table.splitlines()[4:]] == ["2", "0", "1"]
    assert rank(runs, "val_accuracy", "max")[1].info.run_id == "run0"  # the task says which way is better
    assert rank(runs, "val_accuracy", "min")[1].info.run_id == "run2"  # never guessed from the metric's name


def sweep(cli, *overrides, env=None):
    return cli("-m", "trainer.progress=false", *overrides, env=env)


def children_of(cli, parent):
    return [r for r in cli.runs() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


@pytest.mark.slow
def test_a_sweep_on_local_ray_with_a_failing_job(cli):
    result = sweep(cli, "trainer.epochs=2", "optimizer.lr=1e-3,3e-3,-1")
    assert result.returncode == 1, result.stderr  # one job failed: the sweep says so
    assert "sweep: 1 of 3 jobs did not finish" in result.stderr
    (parent,) = [r for r in cli.runs() if "sweep" in r.data.tags]
    children = children_of(cli, parent)
    assert parent.info.status == "FAILED" and len(children) == 3
    by_lr = {r.data.params.get("optimizer/lr"): r for r in children}
    assert by_lr["0.001"].info.status == by_lr["0.003"].info.status == "FINISHED"
    assert by_lr["-1"].info.status == "FAILED" and "optimizer.lr must be a positive number, got -1" in by_lr["-1"].data.tags["error"]
    assert by_lr["0.003"].data.metrics["val_accuracy"] > 0.5
    assert {r.data.tags["sweep_job"] for r in children} == {"0", "1", "2"}
    table = cli.client.download_artifacts(parent.info.run_id, "sweep.md", str(cli.folder))
    assert "| 1 | 1 | FINISHED |" in open(table).read()  # lr=3e-3 ranks first by val_loss
    assert parent.data.tags["best_run"] == by_lr["0.003"].info.run_id


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_sweep_on_an_existing_ray_cluster(cli):
    port = free_port()
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    head = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--disable-usage-stats"],
                          capture_output=True, text=True)
    assert head.returncode == 0, head.stderr
    try:  # `ray start` turns on token authentication: the driver must send the token too
        result = sweep(cli, "trainer.epochs=1", "seed=0,1", f"hydra.launcher.ray.init.address=127.0.0.1:{port}",
                       env={**os.environ, "RAY_AUTH_MODE": "token"})
        assert result.returncode == 0, result.stderr
        assert "Connected to Ray cluster" in result.stderr
        (parent,) = [r for r in cli.runs() if "sweep" in r.data.tags]
        assert parent.info.status == "FINISHED"
        assert sorted(r.info.status for r in children_of(cli, parent)) == ["FINISHED", "FINISHED"]
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True)


@pytest.mark.slow
def test_a_job_whose_worker_dies_is_retried_and_resumes(cli):
    process = cli.start("-m", "trainer.progress=false", "trainer.epochs=25", "trainer.batch_size=16",
                        "trainer.checkpoint_min_seconds=0", "seed=0")
    deadline, victim = time.time() + 300, None
    while time.time() < deadline and victim is None:
        for run in cli.runs():
            started = run.info.status == "RUNNING" and "sweep_job" in run.data.tags
            if started and "checkpoints/last.npz" in cli.artifacts(run.info.run_id):
                victim = run
        time.sleep(0.1)
    assert victim is not None, "no job reached its first checkpoint"
    os.kill(int(victim.data.tags["pid"]), signal.SIGKILL)  # the worker process dies mid-job
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    finished = cli.client.get_run(victim.info.run_id)
    assert finished.info.status == "FINISHED" and finished.data.tags["attempts"] == "2"
    assert finished.data.metrics["epoch"] == 25 and int(finished.data.tags["pid"]) != int(victim.data.tags["pid"])
    assert f"attempt 2, continuing run {victim.info.run_id} from step" in stdout  # from its checkpoint


@pytest.mark.slow
def test_bayesian_search_with_the_optuna_sweeper_on_ray(cli):
    result = sweep(cli, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
                   "optimizer.lr=tag(log, interval(1e-4, 1e-2))", "trainer.epochs=1")
    assert result.returncode == 0, result.stderr
    assert "Best parameters: {'optimizer.lr':" in result.stdout + result.stderr
    (parent,) = [r for r in cli.runs() if "sweep" in r.data.tags]
    children = children_of(cli, parent)
    rates = {float(r.data.params["optimizer/lr"]) for r in children}
    assert len(children) == 4 and len(rates) == 4 and all(1e-4 <= lr <= 1e-2 for lr in rates)
    assert all(r.info.status == "FINISHED" for r in children) and parent.info.status == "FINISHED"
    best = min(children, key=lambda r: r.data.metrics["val_loss"])
    assert parent.data.tags["best_run"] == best.info.run_id
