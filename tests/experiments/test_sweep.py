"""-m sweeps on Ray Tune (a real local Ray, or a cluster started with `ray start`), end to end,
checked through MLflow's client."""

import os
import re

import numpy as np
import pytest
from ray import tune

from experiments import lineage
from experiments.sweep import space as search_space
from experiments.sweep.ranking import rank
from experiments.sweep.space import SearchSpaceError
from tests.experiments.conftest import RAY_CLUSTER_AUTH, free_port
from zkynet import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = "tests.fixtures.callbacks"
QUIET = ("trainer.progress=false", "trainer.checkpoint_min_seconds=0")


def test_hydra_sweep_syntax_becomes_a_tune_search_space():
    space = search_space.parse(
        [
            "model=mlp,cnn",
            "seed=range(0,3)",
            "+x=choice(a,b)",
            "trainer.epochs=2",
            "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
            "model.dropout=interval(0, 0.5)",
            "model.hidden=tag(int, interval(8, 64))",
        ]
    )
    assert space.fixed == ["trainer.epochs=2"]
    assert space.choices == {"model": ["mlp", "cnn"], "seed": [0, 1, 2], "+x": ["a", "b"]}
    grid = space.tune_space("grid")
    assert grid["model"] == tune.grid_search(["mlp", "cnn"]) and grid["seed"] == tune.grid_search([0, 1, 2])
    assert isinstance(space.tune_space("random")["model"], tune.search.sample.Categorical)
    lr, dropout, hidden = grid["optimizer.lr"], grid["model.dropout"], grid["model.hidden"]
    assert isinstance(lr.get_sampler(), tune.search.sample.Float._LogUniform) and (lr.lower, lr.upper) == (1e-4, 1e-2)
    assert isinstance(dropout.get_sampler(), tune.search.sample.Float._Uniform)
    assert isinstance(hidden, tune.search.sample.Integer) and (hidden.lower, hidden.upper) == (8, 65)  # 64 included
    values = {"model": "cnn", "seed": 2, "+x": "a", "optimizer.lr": 0.001, "model.dropout": 0.25, "model.hidden": 9}
    assert space.overrides(values) == [
        "trainer.epochs=2",
        "model=cnn",
        "seed=2",
        "+x=a",
        "optimizer.lr=0.001",
        "model.dropout=0.25",
        "model.hidden=9",
    ]


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=tag(log, interval(0, 1))", "a log interval needs a positive low end"),
        ("optimizer.lr=interval(1, 0.1)", "an interval needs low < high"),
        ("optimizer.lr=tag(loq, interval(1e-4, 1e-2))", "unknown tag loq"),
        ("seed=tag(log, choice(1, 2))", "tags apply to interval(...) only"),
    ],
)
def test_a_search_space_tune_cannot_search_is_refused_naming_the_override(override, message):
    with pytest.raises(SearchSpaceError, match=re.escape(message)):
        search_space.parse([override])


class FakeRun:
    def __init__(self, job, status, metrics, overrides):
        self.data = type("Data", (), {"metrics": metrics, "tags": {"sweep_job": str(job), "overrides": overrides}})
        self.info = type("Info", (), {"status": status, "run_id": f"run{job}"})


def test_ranking_puts_the_best_first_and_failures_last():
    runs = [
        FakeRun(0, "FINISHED", {"val_loss": 0.5, "val_accuracy": 0.8}, "lr=1 epochs=2"),
        FakeRun(1, "FAILED", {}, "lr=9 epochs=2"),
        FakeRun(2, "FINISHED", {"val_loss": 0.2, "val_accuracy": 0.7}, "lr=2 epochs=2"),
    ]
    table, best = rank(runs, "val_loss", "min")
    assert best.info.run_id == "run2" and table.splitlines()[0] == "all trials: epochs=2"
    assert [line.split("|")[2].strip() for line in table.splitlines()[4:]] == ["2", "0", "1"]
    assert rank(runs, "val_accuracy", "max")[1].info.run_id == "run0"  # the task says which way is better
    assert rank(runs, "val_accuracy", "min")[1].info.run_id == "run2"  # never guessed from the metric's name


def test_the_ranking_shows_the_tasks_other_metrics_with_four_significant_digits():
    runs = [
        FakeRun(
            1, "FINISHED", {"val_loss": 0.123456789, "val_accuracy": 0.98765432}, "optimizer.lr=0.005185713905447035"
        ),
        FakeRun(2, "KILLED", {"val_loss": 2.5, "val_accuracy": 0.1}, "optimizer.lr=1e-05"),
    ]
    table, _ = rank(runs, "val_loss", "min")
    header, _, first, second = table.splitlines()[2:]
    assert header == "| rank | trial | status | val_loss | val_accuracy | overrides | run id |"
    assert first == "| 1 | 1 | FINISHED | 0.1235 | 0.9877 | optimizer.lr=0.005186 | run1 |"
    assert second == "| 2 | 2 | KILLED | 2.5 | 0.1 | optimizer.lr=1e-05 | run2 |"


def sweep(cli, *overrides, env=None, timeout=900):
    return cli("-m", *QUIET, *overrides, env=env, timeout=timeout)


def sweep_runs(cli):
    """(the sweep's run, its trials' runs by trial number)."""
    (parent,) = [r for r in cli.runs() if "sweep" in r.data.tags]
    children = [r for r in cli.runs() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, {int(r.data.tags["sweep_job"]): r for r in children}


def test_a_command_line_tune_cannot_search_stops_before_any_run(cli):
    result = sweep(cli, "optimizer.lr=tag(log, interval(0, 1))")
    assert result.returncode == 2 and "a log interval needs a positive low end" in result.stderr
    assert "Traceback" not in result.stderr and cli.runs() == []


@pytest.mark.slow
def test_trials_refill_the_machine_and_a_failing_trial_fails_the_sweep(cli, tmp_path):
    """Four trials, two at a time: trial 3 starts as soon as trial 1 ends, while trial 2
    still trains (it waits for trial 3 to start: no batch barrier, or no meeting);
    trial 4's config cannot be composed: a FAILED child, exit code 1."""
    result = sweep(
        cli,
        "hydra.sweeper.ray.num_cpus=2",
        "trainer.epochs=2,10,3,abc",
        f"+callbacks.meet._target_={FIXTURES}.Rendezvous",
        f"+callbacks.meet.path={tmp_path / 'arrived'}",
        "+callbacks.meet.waiter_epochs=10",
        "+callbacks.meet.arriver_epochs=3",
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert result.returncode == 1, result.stderr
    parent, trials = sweep_runs(cli)
    assert parent.info.status == "FAILED" and sorted(trials) == [1, 2, 3, 4]
    assert [trials[i].info.status for i in range(1, 5)] == ["FINISHED", "FINISHED", "FINISHED", "FAILED"]
    assert "Value 'abc' of type 'str' could not be converted to Integer" in trials[4].data.tags["error"]
    assert trials[1].info.end_time <= trials[3].info.start_time < trials[2].info.end_time
    long = trials[2]
    assert long.data.metrics["epoch"] == 10 and len(cli.client.get_metric_history(long.info.run_id, "val_loss")) == 10
    assert long.data.params["trainer/epochs"] == "10" and "compile_seconds" in long.data.metrics
    assert "[trial 2] epoch 10/10:" in result.stderr
    assert "[trial 4] FAILED: ConfigCompositionException: Error merging override trainer.epochs=abc" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == "sweep: 1 of 4 trials failed"  # the summary comes last
    assert parent.data.tags["best_run"] in {trials[i].info.run_id for i in range(1, 4)}


@pytest.mark.slow
def test_asha_stops_a_bad_trial_early(cli, on_cluster):
    """One trial at a time, the good one first: at the first rung the bad trial meets
    the good one's result and is stopped; its run ends FINISHED, tagged, closed by its own
    worker (its metrics and pictures are all there) even when closing takes seconds."""
    cluster, env = on_cluster
    result = sweep(
        cli,
        "hydra.sweeper.scheduler=asha",
        "hydra.sweeper.max_concurrent=1",
        "hydra.sweeper.asha.reduction_factor=2",
        "hydra.sweeper.results=every",  # every trial's pictures, drawn as it ends
        "trainer.epochs=4",
        "optimizer.lr=3e-3,1e-6",
        *cluster,
        f"+callbacks.slow._target_={FIXTURES}.SlowClose",
        "+callbacks.slow.seconds=4",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    parent, trials = sweep_runs(cli)
    good, bad = trials[1], trials[2]
    assert parent.info.status == "FINISHED" and good.info.status == bad.info.status == "FINISHED"
    assert good.info.end_time <= bad.info.start_time  # one at a time
    assert good.data.metrics["epoch"] == 4 and "stopped_early" not in good.data.tags
    assert bad.data.tags["stopped_early"] == "true" and bad.data.tags["stopped_at_epoch"] == "1"
    assert bad.data.metrics["epoch"] == 1 and len(cli.client.get_metric_history(bad.info.run_id, "val_loss")) == 1
    assert lineage.CURVES in {a.path for a in cli.client.list_artifacts(bad.info.run_id)}
    assert "[trial 2] trained 1 of 4 epochs, stopped early by the scheduler" in result.stderr


@pytest.mark.slow
def test_bayesian_search_with_optuna_through_tune(cli, on_cluster):
    cluster, env = on_cluster
    result = sweep(
        cli,
        "hydra.sweeper.search=optuna",
        "hydra.sweeper.num_samples=4",
        "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
        "trainer.epochs=1",
        *cluster,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    parent, trials = sweep_runs(cli)
    rates = {float(r.data.params["optimizer/lr"]) for r in trials.values()}
    assert len(trials) == 4 and len(rates) == 4 and all(1e-4 <= lr <= 1e-2 for lr in rates)
    assert all(r.info.status == "FINISHED" for r in trials.values()) and parent.info.status == "FINISHED"
    best = min(trials.values(), key=lambda r: r.data.metrics["val_loss"])
    assert parent.data.tags["best_run"] == best.info.run_id
    # results=best: the best trial's curves and model, drawn when the sweep ended; the others' left out
    files = cli.artifacts(best.info.run_id)
    assert {"curves.png", "graph.png"} <= set(files) and best.data.tags["results"] == "logged"
    models = lineage.logged_models(cli.client, best)  # MLflow 3: a logged model, not a run artifact
    assert [str(m.status) for m in models] == ["READY"]
    assert best.info.status == "FINISHED"
    for run in trials.values():
        if run.info.run_id != best.info.run_id:
            assert run.data.tags["results"] == "deferred" and "curves.png" not in cli.artifacts(run.info.run_id)
            assert lineage.logged_models(cli.client, run) == []
            assert "graph.png" in cli.artifacts(run.info.run_id)  # drawn once, logged by every trial


@pytest.mark.slow
def test_on_an_existing_cluster_a_trial_whose_worker_dies_continues_its_run_exactly(
    cli, runner, tmp_path, ray_cluster, mlflow_server
):
    marker = tmp_path / "died"
    settings = ("trainer.epochs=6", "trainer.batch_size=32", "model.dropout=0.2", "seed=3")
    env = {**os.environ, "PYTHONPATH": ROOT, **RAY_CLUSTER_AUTH}
    result = sweep(
        cli,
        *settings,
        f"+callbacks.die._target_={FIXTURES}.DieOnce",
        "+callbacks.die.after=3",
        f"+callbacks.die.marker={marker}",
        "optimizer.lr=3e-3,1e-3",
        f"hydra.sweeper.ray.address={ray_cluster}",
        f"tracking.uri={mlflow_server}",
        env=env,
    )  # as across machines: a cluster and a tracking server
    assert result.returncode == 0, result.stderr
    assert marker.exists()  # a worker did die, once
    parent, trials = sweep_runs(cli)
    assert parent.info.status == "FINISHED" and sorted(trials) == [1, 2]
    assert all(r.info.status == "FINISHED" for r in trials.values())
    assert all(r.info.artifact_uri.startswith((tmp_path / "server-artifacts").as_uri()) for r in trials.values())
    (died,) = [r for r in trials.values() if r.data.tags.get("attempts") == "2"]

    runner(*settings, f"optimizer.lr={died.data.params['optimizer/lr']}")  # the same, never interrupted, here
    (reference,) = [r for r in runner.runs() if not {"sweep", "sweep_job"} & set(r.data.tags)]
    for metric in ("val_loss", "train_loss", "batch_loss"):
        got = sorted((m.step, m.value) for m in cli.client.get_metric_history(died.info.run_id, metric))
        want = sorted((m.step, m.value) for m in runner.client.get_metric_history(reference.info.run_id, metric))
        assert got == want, metric

    def params(client, run_id):
        return checkpoint.load(client.download_artifacts(run_id, "checkpoints/last.npz", str(tmp_path / run_id)))

    got, want = params(cli.client, died.info.run_id)["params"], params(runner.client, reference.info.run_id)["params"]
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.slow
def test_the_basic_sweeper_runs_jobs_one_after_another_tracked_the_same_way(cli):
    result = sweep(cli, "hydra/sweeper=basic", "hydra/launcher=basic", "trainer.epochs=1", "seed=0,1")
    assert result.returncode == 0, result.stderr
    parent, trials = sweep_runs(cli)
    assert parent.info.status == "FINISHED" and sorted(trials) == [1, 2]
    assert trials[1].info.end_time <= trials[2].info.start_time and parent.data.tags["best_run"]


@pytest.mark.slow
def test_a_sweep_that_cannot_reach_its_cluster_fails_at_once_naming_it(cli):
    result = sweep(cli, "trainer.epochs=1", "seed=0,1", f"hydra.sweeper.ray.address=127.0.0.1:{free_port()}")
    assert (
        result.returncode == 1
        and "cannot reach the Ray cluster at hydra.sweeper.ray.address=127.0.0.1:" in result.stderr
        and "Traceback" not in result.stderr
    )
    (parent,) = cli.runs()
    assert parent.info.status == "FAILED" and "cannot reach the Ray cluster" in parent.data.tags["error"]


@pytest.mark.slow
@pytest.mark.parametrize("token_mode", [False, True], ids=["without token mode", "token mode, no token file"])
def test_a_sweep_without_its_clusters_token_fails_saying_so(cli, ray_cluster, token_mode, tmp_path):
    """Without RAY_AUTH_MODE, Ray retries for ~20 s, then cannot connect; with it but no
    token anywhere (a HOME without ~/.ray/auth_token), Ray refuses at once."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}, "PYTHONPATH": ROOT}
    if token_mode:
        env.update(RAY_AUTH_MODE="token", HOME=str(tmp_path))
    result = sweep(cli, "trainer.epochs=1", "seed=0,1", f"hydra.sweeper.ray.address={ray_cluster}", env=env)
    assert result.returncode == 1 and "admits only holders of its token" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    (parent,) = cli.runs()
    assert parent.info.status == "FAILED" and "admits only holders of its token" in parent.data.tags["error"]


@pytest.mark.slow
def test_population_based_training_exploits_through_tune_checkpoints(cli, on_cluster):
    """After 2 epochs the hopeless trial (lr 1e-6) takes on the good trial's weights and a
    mutated copy of its learning rate: its loss drops at once, the rate is logged per
    epoch, and it is still one MLflow run with every epoch once."""
    cluster, env = on_cluster
    result = sweep(
        cli,
        "hydra.sweeper.scheduler=pbt",
        "hydra.sweeper.pbt.interval=2",
        "trainer.epochs=4",
        "hydra.sweeper.pbt.quantile_fraction=0.5",
        "optimizer.lr=1e-6,3e-3",
        "trainer.lr_schedule=constant",
        *cluster,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    parent, trials = sweep_runs(cli)
    assert parent.info.status == "FINISHED" and sorted(trials) == [1, 2]
    assert all(r.info.status == "FINISHED" for r in trials.values())
    for run in trials.values():
        assert [m.step for m in cli.client.get_metric_history(run.info.run_id, "val_loss")] == [22, 44, 66, 88]
    hopeless = trials[1]
    rates = [m.value for m in cli.client.get_metric_history(hopeless.info.run_id, "hp/optimizer.lr")]
    losses = [m.value for m in cli.client.get_metric_history(hopeless.info.run_id, "val_loss")]
    assert len(rates) == 4 and rates[:2] == [1e-6, 1e-6] and rates[2] == rates[3]  # mutated (maybe back to
    assert losses[2] < 0.5 * losses[1]  # 1e-6: PBT's mutation of a choice may land there) and the good weights
