"""A researcher's own work through the runner (issue 24): their metrics reach MLflow,
nothing is lost when a run is stopped, the best model comes back, the in-process API
and `zkynet.load` work as README and docs/experiments.md show, and the records stay clean."""

import math
import os
import re
import signal
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest

import zkynet
from experiments import lineage, ownership
from experiments.schema import ConfigError
from tests.experiments.conftest import ROOT
from tests.experiments.test_lifecycle import SignalAt
from zkynet import checkpoint, model_store
from zkynet.training.trainer import MetricError

MINE = "+callbacks.mine._target_=tests.fixtures.own_work."


def history(runner, run_id, key):
    return [(m.step, m.value) for m in runner.client.get_metric_history(run_id, key)]


def test_metrics_of_your_own_reach_the_run_and_no_stray_run_is_made(runner):
    result = runner("trainer.epochs=2", f"{MINE}MyMetrics", "task._target_=tests.fixtures.own_work.with_error_rate")
    (run,) = runner.runs()  # mlflow.log_metric in a callback made no run of its own (experiment Default)
    run_id = run.info.run_id
    assert result.run_id == run_id
    gaps = history(runner, run_id, "my_gap")  # added to the record by a callback placed after the standard ones
    assert [step for step, _ in gaps] == [22, 44]
    assert gaps[-1][1] == pytest.approx(run.data.metrics["val_loss"] - run.data.metrics["train_loss"])
    assert [step for step, _ in history(runner, run_id, "my_step_metric")] == list(range(5, 45, 5))
    assert history(runner, run_id, "via_mlflow") == [(22, 1.0), (44, 2.0)]  # mlflow.log_metric: this run
    assert len(history(runner, run_id, "val_error_rate")) == 2  # a task's own metric
    assert run.data.metrics["val_error_rate"] == pytest.approx(1 - run.data.metrics["val_accuracy"])
    assert mlflow.get_tracking_uri() != runner.store  # MLflow's process-wide URI is given back


def test_compile_seconds_once_and_no_parameter_that_differs_only_by_a_path(runner):
    runner("trainer.epochs=2", "callbacks=[default,best_checkpoint]")
    runner("trainer.epochs=2", "callbacks=[default,best_checkpoint]")
    first, second = runner.runs()
    assert len(history(runner, first.info.run_id, "compile_seconds")) == 1
    assert first.data.params == second.data.params  # same settings, same params (folders and names differ)
    assert "run_name" not in first.data.params and "output_dir" not in first.data.params
    assert first.data.params["callbacks/checkpoint/path"] == "${output_dir}/checkpoints/last.npz"


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([], "BadMetric.on_epoch_end (record['my_metric']): metric 'my_metric' is nan"),
        (["+callbacks.mine.value=abc"], "metric 'my_metric' must be one real number, got 'abc'"),
        (["+callbacks.mine.name=3"], "BadMetric.on_epoch_end (record[3]): a metric's name must be a non-empty string"),
        (["+callbacks.mine.log=true"], "BadMetric.on_epoch_end: trainer.log: metric 'my_metric' is nan"),
    ],
)
def test_a_metric_that_is_not_a_finite_number_names_the_callback_and_the_metric(runner, arguments, message):
    with pytest.raises(MetricError, match=re.escape(message)):
        runner("trainer.epochs=2", f"{MINE}BadMetric", *arguments)
    (run,) = runner.runs()
    assert run.info.status == "FAILED" and message in run.data.tags["error"]


def test_nan_logged_on_purpose_is_logged_as_nan(runner):
    runner("trainer.epochs=1", f"{MINE}BadMetric", "+callbacks.mine.log=true", "+callbacks.mine.allow_nonfinite=true")
    (run,) = runner.runs()
    assert run.info.status == "FINISHED" and math.isnan(run.data.metrics["my_metric"])


def test_the_first_checkpoint_comes_after_the_first_epoch(runner, monkeypatch):
    monkeypatch.setattr("experiments.build.callbacks", _with(SignalAt(signal.SIGTERM, epoch=1)))
    with pytest.raises(KeyboardInterrupt):
        runner("trainer.epochs=3", "trainer.checkpoint_min_seconds=3600")  # the default waits 30 s between saves
    (run,) = runner.runs()
    assert run.info.status == "KILLED"
    monkeypatch.undo()
    result = runner(f"trainer.resume={run.info.run_id}")
    assert [step for step, _ in history(runner, run.info.run_id, "val_loss")] == [22, 44, 66]  # epoch 1 once
    assert result.status == "FINISHED"


def test_a_signal_mid_epoch_saves_that_step_and_the_resume_goes_on_from_it(runner, monkeypatch):
    from tests.fixtures.own_work import SignalAtStep

    monkeypatch.setattr("experiments.build.callbacks", _with(SignalAtStep(30)))  # in epoch 2 of 22 steps each
    with pytest.raises(KeyboardInterrupt):
        runner("trainer.epochs=3", "trainer.log_every_n_steps=1")
    (run,) = runner.runs()
    run_id = run.info.run_id
    stored = checkpoint.load(runner.client.download_artifacts(run_id, "checkpoints/last.npz", str(runner.folder)))
    assert int(stored["meta"]["step"]) == 30 and len(stored["epoch_steps"]["loss"]) == 8  # epoch 2's steps so far
    assert run.info.status == "KILLED" and max(s for s, _ in history(runner, run_id, "batch_loss")) == 30
    monkeypatch.undo()
    runner(f"trainer.resume={run_id}")
    assert [s for s, _ in history(runner, run_id, "batch_loss")] == list(range(1, 67))  # every step once
    assert [s for s, _ in history(runner, run_id, "val_loss")] == [22, 44, 66]


def _with(*extra):
    from experiments import build

    configured = build.callbacks
    return lambda cfg: configured(cfg) + list(extra)


def test_the_runs_model_is_the_best_epochs_and_the_last_stays_available(runner, capsys, monkeypatch, tmp_path):
    result = runner(
        "callbacks=[default,early_stopping]",  # a monitor without a best checkpoint: the run keeps one anyway
        "trainer.epochs=6",
        "callbacks.early_stopping.patience=2",
        "callbacks.early_stopping.min_delta=10",  # only epoch 1 counts as an improvement
    )
    (run,) = runner.runs()
    run_id = run.info.run_id
    assert result.best_epoch == result.model_epoch == 1 and run.data.tags["model_epoch"] == "1"
    assert run.data.metrics["epoch"] == 3 and run.data.tags["best_epoch"] == "1"
    err = capsys.readouterr().err
    assert "model: epoch 1, the best by val_loss" in err and f"zkynet.load('{run_id}', which='last')" in err

    def params(path):
        return checkpoint.load(runner.client.download_artifacts(run_id, path, str(tmp_path / path)))["params"]

    best, last = params("checkpoints/best.npz"), params("checkpoints/last.npz")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for which, expected in (("best", best), ("last", last)):
        loaded = zkynet.load(run_id, tracking_uri=runner.store, which=which)
        for name, p in loaded.model.named_parameters().items():
            np.testing.assert_array_equal(np.asarray(p.value), expected[name], err_msg=f"{which} {name}")
    for name, p in result.model.named_parameters().items():
        np.testing.assert_array_equal(np.asarray(p.value), best[name])
    x = np.asarray(zkynet.data.load_digits().validation.inputs[:4])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", runner.store)
    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(x)  # what `mlflow models serve` answers
    np.testing.assert_allclose(served, zkynet.framework.compile.forward(result.model)(x), rtol=1e-6)


def test_a_resumed_run_keeps_its_best_epoch_and_its_patience(runner, monkeypatch, tmp_path):
    settings = (
        "callbacks=[default,early_stopping]",
        "trainer.epochs=6",
        "callbacks.early_stopping.patience=2",
        "callbacks.early_stopping.min_delta=10",  # only epoch 1 improves: stop after epoch 3
    )
    monkeypatch.setattr("experiments.build.callbacks", _with(SignalAt(signal.SIGTERM, epoch=2)))
    with pytest.raises(KeyboardInterrupt):
        runner(*settings)
    (run,) = runner.runs()
    monkeypatch.undo()
    result = runner(f"trainer.resume={run.info.run_id}")
    done = runner.client.get_run(run.info.run_id)
    assert done.data.tags["stopped_at_epoch"] == "3" and done.data.metrics["epoch"] == 3  # the patience went on
    assert result.model_epoch == result.best_epoch == 1 and done.data.tags["best_epoch"] == "1"
    best = runner.client.download_artifacts(run.info.run_id, "checkpoints/best.npz", str(tmp_path))
    assert int(checkpoint.load(best)["meta"]["epoch"]) == 1
    for name, value in checkpoint.load(best)["params"].items():  # the model is epoch 1's, trained before the stop
        np.testing.assert_array_equal(np.asarray(result.model.named_parameters()[name].value), value)


def test_zkynet_load_finds_the_projects_store_from_any_folder_and_names_the_stores_searched(
    runner, tmp_path, monkeypatch
):
    result = runner("trainer.epochs=1", "tracking.log_graph=false")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(model_store, "PROJECT_STORE", runner.folder / "mlflow.db")  # the runner's default store
    loaded = zkynet.load(result.run_id)
    assert type(loaded.model).__name__ == "MLP"
    assert list(elsewhere.iterdir()) == []  # nothing created in the working directory (no stray mlflow.db)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{runner.store} (no such run)")):
        zkynet.load("0123456789abcdef0123456789abcdef")
    started = time.perf_counter()
    with pytest.raises(
        ConnectionError, match=re.escape("cannot reach the MLflow tracking server at http://127.0.0.1:9")
    ):
        zkynet.load(result.run_id, tracking_uri="http://127.0.0.1:9")
    assert time.perf_counter() - started < 15
    with pytest.raises(ValueError, match="bogus://nowhere is not an MLflow store URI"):
        zkynet.load(result.run_id, tracking_uri="bogus://nowhere")


def test_a_sweeps_run_gets_the_git_commit_from_its_first_trial(runner):
    from experiments.tracking import Tracker

    sweep = Tracker(runner.store, "classification", run_name="sweep")
    cfg = runner.config("trainer.epochs=1", "tracking.log_graph=false", "tracking.log_model=false")
    cfg.launch.sweep_run_id, cfg.launch.trial = sweep.run_id, 0
    from experiments.runner import run

    run(cfg)
    tags = runner.client.get_run(sweep.run_id).data.tags
    assert len(tags[lineage.GIT_COMMIT]) == 40 and tags[lineage.GIT_DIRTY] in ("true", "false")
    sweep.close()


def test_gitignore_covers_what_the_runner_writes():
    paths = [
        "mlflow.db",
        "mlflow.db.lock",
        "mlflow.db.claims/x.lock",
        "outputs/x",
        "mlartifacts/1",
        "multirun/a",
        "notebooks/.ipynb_checkpoints/a.ipynb",
        "notebooks/outputs/x.png",
        "notebooks/mlflow.db",
    ]
    ignored = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == paths


@pytest.mark.slow
def test_the_in_process_api_works_as_readme_shows_in_a_fresh_process(cli, tmp_path):
    code = (
        "import experiments\n"
        f"cfg = experiments.compose(overrides=['trainer.epochs=1', 'tracking.uri={cli.store}', "
        f"'output_dir={tmp_path / 'out'}', 'tracking.log_graph=false'])\n"
        "result = experiments.run(cfg)\n"
        "print('RESULT', result.run_id, result.status, round(result.metrics['val_accuracy'], 4), result.model_epoch)\n"
        "import experiments.run\n"  # the entry point's module, bound as experiments.run: still callable
        "print('CALLABLE', callable(experiments.run))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    _, run_id, status, accuracy, epoch = re.search(r"RESULT (.*)", done.stdout).group(0).split()
    run = cli.client.get_run(run_id)
    assert status == run.info.status == "FINISHED" and float(accuracy) == round(run.data.metrics["val_accuracy"], 4)
    assert epoch == "1" and "CALLABLE True" in done.stdout


@pytest.mark.slow
def test_a_sigtermed_run_resumes_with_no_step_trained_twice_or_lost(cli, runner, tmp_path):
    settings = ("trainer.epochs=4", "trainer.batch_size=16", "model.dropout=0.2", "trainer.log_every_n_steps=1")
    runner(*settings)  # the uninterrupted reference, in this process
    (reference,) = runner.runs()
    stopped = cli(*settings, "trainer.progress=false", f"{MINE}SignalAtStep", "+callbacks.mine.step=150")  # epoch 2
    assert stopped.returncode == 130, stopped.stderr
    assert [line.split(":")[0] for line in stopped.stderr.splitlines() if line.startswith("epoch ")] == ["epoch 1/4"]
    (killed,) = [r for r in cli.runs() if r.info.run_id != reference.info.run_id]  # one store for both
    assert killed.info.status == "KILLED" and "last checkpoint: step 150" in stopped.stderr
    resumed = cli(f"trainer.resume={killed.info.run_id}", "trainer.progress=false")
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 150 (epoch 2 of 4)" in resumed.stdout
    assert [line.split(":")[0] for line in resumed.stderr.splitlines() if line.startswith("epoch ")] == [
        "epoch 2/4",
        "epoch 3/4",
        "epoch 4/4",
    ]  # epoch 2 finished, not trained again
    for metric in ("val_loss", "train_loss", "batch_loss"):  # every step once, with the same numbers
        got = [(m.step, m.value) for m in cli.client.get_metric_history(killed.info.run_id, metric)]
        expected = [(m.step, m.value) for m in runner.client.get_metric_history(reference.info.run_id, metric)]
        assert sorted(got) == sorted(expected), metric
    final = {
        r: checkpoint.load(c.download_artifacts(r, "checkpoints/last.npz", str(tmp_path / r)))["params"]
        for r, c in ((killed.info.run_id, cli.client), (reference.info.run_id, runner.client))
    }
    for name, value in final[reference.info.run_id].items():
        np.testing.assert_array_equal(final[killed.info.run_id][name], value)


def test_claims_are_released_and_a_held_claim_names_its_holder(runner):
    result = runner("trainer.epochs=1", "tracking.log_graph=false", "tracking.log_model=false")
    claims = ownership.claims_folder(runner.store)
    assert list(claims.glob("*.lock")) == []  # the run ended: its claim is gone
    held = ownership.claim(runner.client, runner.store, result.run_id)
    try:
        with pytest.raises(ownership.RunClaimedError, match=f"being trained by pid {os.getpid()} on "):
            runner(f"trainer.resume={result.run_id}", "trainer.epochs=2")
    finally:
        held.release()
    assert runner.client.get_run(result.run_id).info.status == "FINISHED"
    ownership._claim_remotely(runner.client, result.run_id, 2)  # a tracking server's claim: a parameter
    with pytest.raises(ownership.RunClaimedError, match=f"run {result.run_id} was claimed by pid {os.getpid()}"):
        ownership._claim_remotely(runner.client, result.run_id, 2)


def test_a_run_whose_process_died_before_claiming_it_is_ended_by_the_next(runner):
    """kill -9 between the run's creation and its claim (milliseconds) leaves no lock file;
    the next run ends it once ownership.CLAIM_GRACE_SECONDS have passed, not before."""
    client = runner.client
    experiment = client.create_experiment("died")
    old = time.time() * 1000 - (ownership.CLAIM_GRACE_SECONDS + 5) * 1000
    died = client.create_run(experiment, start_time=int(old), tags={lineage.OVERRIDES: ""}).info.run_id
    starting = client.create_run(experiment, tags={lineage.OVERRIDES: ""}).info.run_id  # being claimed now
    foreign = client.create_run(experiment, start_time=int(old)).info.run_id  # not a zkynet run
    ownership.claims_folder(runner.store).mkdir(parents=True, exist_ok=True)
    assert ownership.end_abandoned_runs(client, runner.store) == [died]
    assert client.get_run(died).info.status == "KILLED" and "ended KILLED" in client.get_run(died).data.tags["error"]
    assert client.get_run(starting).info.status == "RUNNING" and client.get_run(foreign).info.status == "RUNNING"
    with pytest.raises(ConfigError, match=f"run {died} has no stored configuration"):
        runner(f"trainer.resume={died}")
