"""Sweeps beyond one process's Ray: a cluster of several nodes on this machine (one lost
mid-sweep, its trial continuing elsewhere from its checkpoint, read through the tracking
server), and GPUs that a node declares (Ray hands them out as on real hardware; JAX
stays on the CPU for the test)."""

import os
import time

import pytest

from tests.experiments.conftest import RAY_CLUSTER_AUTH, mlflow_server_on, ray_head
from tests.experiments.test_sweep import ROOT, sweep, sweep_runs

SWEEP_FIXTURES = "tests.fixtures.sweep_callbacks"
ON_CPU = "hydra.sweeper.jax_platforms=cpu"  # the node's GPUs are declared, not real


def env_with_token():
    """The sweep's environment: the clusters here admit holders of their own token."""
    return {**os.environ, "PYTHONPATH": ROOT, **RAY_CLUSTER_AUTH}


@pytest.fixture(scope="module")
def four_gpus():
    """A one-node cluster that says it has 4 GPUs (and 4 CPUs)."""
    with ray_head(num_cpus=4, num_gpus=4, env=RAY_CLUSTER_AUTH) as address:
        yield f"hydra.sweeper.ray.address={address}"


def together(tmp_path, count):
    return (
        f"+callbacks.together._target_={SWEEP_FIXTURES}.Together",
        f"+callbacks.together.folder={tmp_path}/t",
        f"+callbacks.together.count={count}",
    )


def devices(run):
    return dict(item.split("=", 1) for item in run.data.tags["device_environment"].split())


@pytest.mark.slow
def test_one_gpu_per_trial_four_trials_at_once_on_four_devices(cli, tmp_path, four_gpus):
    result = sweep(
        cli,
        "hydra.sweeper.resources.gpu=1",
        ON_CPU,
        "seed=0,1,2,3",
        "trainer.epochs=2",
        four_gpus,
        *together(tmp_path, 4),
        env=env_with_token(),
    )
    assert result.returncode == 0, result.stderr
    assert "every trial asks Ray for 1 CPU and 1 GPU" in result.stderr
    _, trials = sweep_runs(cli)
    given = {n: r.data.tags["gpus"] for n, r in trials.items()}
    assert sorted(given.values()) == ["0", "1", "2", "3"], given  # four distinct devices, at the same time
    for run in trials.values():
        assert devices(run)["cuda_visible_devices"] == run.data.tags["gpus"]
        assert devices(run)["xla_python_client_preallocate"] == "false" and devices(run)["jax_platforms"] == "cpu"
        assert "xla_python_client_mem_fraction" not in devices(run)


@pytest.mark.slow
def test_a_quarter_gpu_per_trial_four_trials_share_one_device_and_split_its_memory(cli, tmp_path, four_gpus):
    result = sweep(
        cli,
        "hydra.sweeper.resources.gpu=0.25",
        ON_CPU,
        "seed=0,1,2,3",
        "trainer.epochs=2",
        four_gpus,
        *together(tmp_path, 4),
        env=env_with_token(),
    )
    assert result.returncode == 0, result.stderr
    _, trials = sweep_runs(cli)
    assert len({r.data.tags["gpus"] for r in trials.values()}) == 1 and len(trials) == 4
    for run in trials.values():
        assert devices(run)["cuda_visible_devices"] == run.data.tags["gpus"]
        assert devices(run)["xla_python_client_mem_fraction"] == "0.225"
        assert devices(run)["xla_python_client_preallocate"] == "false"


@pytest.mark.slow
def test_auto_asks_for_a_gpu_and_auto_packs_fill_the_devices(cli, four_gpus):
    """gpu=auto on a cluster with GPUs: one per trial; pack=auto: 8 trials over the 4 trial
    slots the GPUs give, 4 packs of 2, each pack's members on their pack's device."""
    result = sweep(
        cli,
        "hydra.sweeper.pack=auto",
        ON_CPU,
        "seed=range(0,8)",
        "trainer.epochs=1",
        four_gpus,
        env=env_with_token(),
    )
    assert result.returncode == 0, result.stderr
    assert "8 trials in 4 pack(s) of up to 2" in result.stderr and "1 CPU and 1 GPU" in result.stderr
    _, members = sweep_runs(cli)
    assert len(members) == 8 and all(r.data.tags["gpus"] in {"0", "1", "2", "3"} for r in members.values())


def wait_for(path, process, seconds=300):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)
    time.sleep(0.2)  # written whole
    return path.read_text()


@pytest.mark.slow
def test_a_sweep_over_two_nodes_loses_one_and_its_trial_goes_on_elsewhere(cli, tmp_path, monkeypatch):
    """Two nodes of one CPU each (and a head with none), an MLflow server that serves the
    artifacts (no shared disk): the two trials train on one node each; the node of the first
    to checkpoint epoch 2 is removed; its trial continues on the other node from that
    checkpoint, downloaded through the server, in the same run. Then, with max_failures=0,
    a lost node's trial ends FAILED saying why and the other finishes."""
    from ray.cluster_utils import Cluster

    # a cluster of this test process (which joins it without a token): open, on this machine only
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    open_cluster = {**os.environ, "PYTHONPATH": ROOT, "RAY_AUTH_MODE": "disabled"}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    try:
        with mlflow_server_on(cli.store, tmp_path / "served", serve_artifacts=True) as server:
            common = (
                f"hydra.sweeper.ray.address={cluster.address}",
                f"tracking.uri={server}",
                f"+callbacks.wait._target_={SWEEP_FIXTURES}.WaitOnLostNode",
                "+callbacks.wait.after=2",
                "trainer.epochs=4",
                "optimizer.lr=3e-3,1e-3",
            )
            marker = tmp_path / "lost"
            process = cli.start(
                "-m",
                "trainer.progress=false",
                "trainer.checkpoint_min_seconds=0",
                *common,
                f"+callbacks.wait.marker={marker}",
                env=open_cluster,
            )
            lost = wait_for(marker, process)
            cluster.remove_node(next(n for n in nodes if n.node_id == lost))
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr
            parent, trials = sweep_runs(cli)
            assert parent.info.status == "FINISHED" and sorted(trials) == [1, 2]
            (moved,) = [r for r in trials.values() if r.data.tags.get("attempts") == "2"]
            other = next(r for r in trials.values() if r is not moved)
            assert moved.data.tags["nodes"].split(",")[0] == lost != moved.data.tags["node"]
            assert {moved.data.tags["node"], other.data.tags["node"]} == {other.data.tags["node"]}
            assert {lost, other.data.tags["node"]} == {n.node_id for n in nodes}  # both nodes trained
            for run in trials.values():
                assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
                steps = [m.step for m in cli.client.get_metric_history(run.info.run_id, "val_loss")]
                assert sorted(steps) == [22, 44, 66, 88]

            nodes.append(cluster.add_node(num_cpus=1))
            marker = tmp_path / "lost-again"
            process = cli.start(
                "-m",
                "trainer.progress=false",
                "trainer.checkpoint_min_seconds=0",
                *common,
                "hydra.sweeper.max_failures=0",
                f"+callbacks.wait.marker={marker}",
                env=open_cluster,
            )
            lost = wait_for(marker, process)
            cluster.remove_node(next(n for n in nodes if n.node_id == lost))
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 1, stderr
            runs = {r.data.tags["sweep_job"]: r for r in cli.runs() if r.data.tags.get("mlflow.parentRunId")}
            failed = [r for r in cli.runs() if r.info.status == "FAILED" and "sweep_job" in r.data.tags]
            assert len(failed) == 1 and failed[0].data.tags["resumable"] == "true" and failed[0].data.tags["error"]
            assert all(r.info.status != "RUNNING" for r in cli.runs()) and runs
    finally:
        cluster.shutdown()
