"""`python -m experiments.run` end to end, checked through MLflow's own client."""

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from experiments.schema import ConfigError
from zkynet import checkpoint
from zkynet.data import DatasetNotFoundError
from zkynet.training import NonFiniteLossError

PNG = b"\x89PNG\r\n\x1a\n"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "user_project"
ROOT = Path(__file__).parents[2]


def run_id_of(result):
    return re.search(r"MLflow run (\w+)", result.stderr).group(1)


@pytest.mark.slow
def test_default_run_trains_and_logs_everything(cli, tmp_path):
    result = cli("model=mlp", "trainer.epochs=3")  # its output piped, as into a log file
    assert result.returncode == 0, result.stderr
    epochs = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "\r" not in result.stderr and "run FINISHED" in result.stderr  # no live bar off a terminal
    assert "mlflow ui --backend-store-uri " + cli.store in result.stderr
    run = cli.client.get_run(run_id_of(result))
    assert run.info.status == "FINISHED" and re.fullmatch(r"mlp-digits-[0-9a-f]{6}", run.info.run_name)
    assert run.data.params["model/widths"] == "[64, 256, 256, 10]"
    assert run.data.params["optimizer/_target_"] == "zkynet.optim.Adam"
    assert run.data.metrics["val_accuracy"] > 0.85 and run.data.metrics["epoch"] == 3
    assert {"train_loss", "val_loss", "samples_per_second", "batch_loss"} <= set(run.data.metrics)
    assert len(cli.client.get_metric_history(run.info.run_id, "val_loss")) == 3
    assert len(cli.client.get_metric_history(run.info.run_id, "batch_loss")) == 66 // 10
    files = cli.artifacts(run.info.run_id)
    assert {"graph.png", "graph.svg", "curves.png", "config/config.yaml", "checkpoints/last.npz"} <= set(files)
    local = Path(cli.client.download_artifacts(run.info.run_id, "graph.png", str(tmp_path)))
    assert local.read_bytes().startswith(PNG) and files["graph.png"] > 5000
    assert run.data.tags["model"] == "MLP" and run.data.tags["dataset"] == "digits"


def test_overrides_reach_the_run(runner):
    value = runner("model=cnn", "optimizer.lr=3e-3", "trainer.epochs=2", "trainer.batch_size=32", "run_name=mine")
    (run,) = runner.runs()
    assert run.data.params["optimizer/lr"] == "0.003" and run.data.params["trainer/batch_size"] == "32"
    assert run.data.params["model/_target_"] == "zkynet.models.cnn.LeNet" and run.info.run_name == "mine"
    assert len(runner.client.get_metric_history(run.info.run_id, "val_accuracy")) == 2
    assert value.objective == run.data.metrics["val_loss"] and value.run_id == run.info.run_id  # a RunResult
    assert (
        run.data.tags["overrides"] == "model=cnn optimizer.lr=3e-3 trainer.epochs=2 trainer.batch_size=32 run_name=mine"
    )


def test_early_stopping_and_the_best_checkpoint_come_from_config_and_are_recorded(runner, tmp_path, capsys):
    runner(
        "callbacks=[default,early_stopping,best_checkpoint]",
        "trainer.epochs=20",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=10",  # only epoch 1 counts
        "callbacks.best_checkpoint.min_delta=10",
    )
    (run,) = runner.runs()
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED" and metrics["epoch"] == 2
    assert (tags["stopped_early"], tags["stopped_at_epoch"], tags["best_epoch"]) == ("true", "2", "1")
    first_epoch = runner.client.get_metric_history(run.info.run_id, "val_loss")[0].value
    assert metrics["best_val_loss"] == pytest.approx(first_epoch)
    best = runner.client.download_artifacts(run.info.run_id, "checkpoints/best.npz", str(tmp_path))
    assert int(checkpoint.load(best)["meta"]["epoch"]) == 1
    assert (
        "early stopping: val_loss did not improve for 1 epochs; stopped after epoch 2 (best: epoch 1)"
        in capsys.readouterr().err
    )


def test_system_metrics_are_an_option(runner):
    runner("trainer.epochs=3", "tracking.system_metrics=0.2")
    (run,) = runner.runs()
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)


def test_the_objective_and_its_direction_come_from_the_task(runner):
    value = runner("trainer.epochs=1", "task.objective=val_accuracy", "task.mode=max").objective
    assert value == runner.runs()[0].data.metrics["val_accuracy"]
    refused = "task.objective=val_acc is not a metric of this run; it has: train_accuracy, train_loss"
    with pytest.raises(ConfigError, match=re.escape(refused)):
        runner("trainer.epochs=1", "task.objective=val_acc")
    first, failed = runner.runs()
    assert failed.info.status == "FAILED" and "task.objective=val_acc" in failed.data.tags["error"]
    assert runner.client.get_experiment(first.info.experiment_id).name == "classification"  # the task's experiment
    # every run has a name of its own, and the commit of the code it ran
    assert re.fullmatch(r"mlp-digits-[0-9a-f]{6}", first.info.run_name) and failed.info.run_name != first.info.run_name

    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    assert first.data.tags["mlflow.source.git.commit"] == git("rev-parse", "HEAD")
    assert first.data.tags["git_dirty"] == str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower()


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lrr=1", "Key 'lrr' is not in struct"),
        ("model=resnet", "Could not find 'model/resnet'"),
        ("trainer.epochs=many", "Value 'many' of type 'str' could not be converted to Integer"),
        ("trainer.precision=float16", "Invalid value 'float16', expected one of [float32, float64, bf16, bfloat16]"),
    ],
)
def test_typos_get_hydras_error(runner, override, message):
    with pytest.raises(Exception) as refused:
        runner.config(override, "trainer.epochs=1")  # composed as the command line composes
    assert message in "".join(str(e) for e in (refused.value, refused.value.__cause__) if e is not None)


def test_a_mixed_precision_run_records_it_keeps_float32_weights_and_resumes(runner, tmp_path):
    runner("trainer.precision=bf16", "trainer.epochs=1", "model.widths=[64,32,10]", "optimizer.lr=1e-2")
    (run,) = runner.runs()
    assert run.data.params["trainer/precision"] == "bf16" and run.data.metrics["val_accuracy"] > 0.3  # chance: 0.1
    state = checkpoint.load(runner.client.download_artifacts(run.info.run_id, "checkpoints/last.npz", str(tmp_path)))
    assert {v.dtype for v in state["params"].values()} == {np.dtype(np.float32)}
    runner(f"trainer.resume={run.info.run_id}", "trainer.epochs=2")
    (resumed,) = runner.runs()
    assert resumed.info.status == "FINISHED" and resumed.data.metrics["epoch"] == 2
    assert len(runner.client.get_metric_history(run.info.run_id, "val_loss")) == 2


def test_a_typo_on_the_command_line_gets_hydras_error_not_our_traceback(cli):
    result = cli("optimizer.lrr=1", "trainer.epochs=1")
    assert result.returncode != 0 and "Key 'lrr' is not in struct" in result.stderr
    assert "experiments/run.py" not in result.stderr and cli.runs() == []


def test_missing_dataset_names_the_download_script(cli, tmp_path):
    result = cli("dataset=mnist", f"dataset.loader.root={tmp_path / 'nothing'}")
    assert result.returncode == 2
    assert "./download_datasets.sh mnist" in result.stderr and str(tmp_path / "nothing" / "mnist") in result.stderr
    assert "Traceback" not in result.stderr and cli.runs() == []  # stopped before any MLflow run


def test_a_model_alone_whose_dataset_is_a_download_names_it(runner, tmp_path):
    with pytest.raises(DatasetNotFoundError, match=re.escape("./download_datasets.sh feedback")):
        runner("model=transformer_classifier", f"dataset.loader.root={tmp_path}")
    assert runner.runs() == []
    with pytest.raises(
        ConfigError,
        match="dataset digits for model RecurrentLM: digits come as layout 'flat' or "
        "'image', not 'tokens'; pick a dataset that fits",
    ):
        runner("model=gru", "dataset=digits")


def test_a_diverging_run_ends_failed_with_the_error_logged(runner):
    with pytest.raises(NonFiniteLossError):
        runner(
            "optimizer=sgd",
            "optimizer.lr=1e8",
            "trainer.lr_schedule=constant",
            "trainer.epochs=3",
            "trainer.log_every_n_steps=1",
        )
    run = runner.runs()[0]
    assert run.info.status == "FAILED" and "the loss became" in run.data.tags["error"]
    assert "error.txt" in runner.artifacts(run.info.run_id)


@pytest.mark.slow
def test_user_architecture_outside_zkynet_is_one_class_and_one_yaml(cli):
    env = {**os.environ, "PYTHONPATH": str(FIXTURES)}
    result = cli(
        f"hydra.searchpath=[file://{FIXTURES / 'conf'}]", "model=tiny", "trainer.epochs=5", "optimizer.lr=1e-2", env=env
    )
    assert result.returncode == 0, result.stderr
    run = cli.client.get_run(run_id_of(result))
    assert run.data.tags["model"] == "TinyNet" and run.data.params["model/hidden"] == "32"
    assert run.data.metrics["val_accuracy"] > 0.5


RESUMABLE = (
    "trainer.epochs=12",
    "trainer.batch_size=16",
    "model.dropout=0.2",
    "trainer.progress=false",
    "trainer.checkpoint_min_seconds=0",
)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_parameters_and_metrics(cli, runner, tmp_path):
    runner(*RESUMABLE)  # the uninterrupted reference, in this process
    (reference,) = runner.runs()

    interrupted = cli(
        *RESUMABLE,
        "+callbacks.interrupt._target_=tests.fixtures.callbacks.InterruptAfterCheckpoint",
        "+callbacks.interrupt.after=5",
    )  # Ctrl-C once epoch 5 is checkpointed
    assert interrupted.returncode == 130, interrupted.stderr
    (killed,) = [r for r in cli.runs() if r.info.status == "KILLED"]
    assert "resume with trainer.resume=" in interrupted.stderr and killed.data.metrics["epoch"] == 5

    resumed = cli(f"trainer.resume={killed.info.run_id}", "trainer.progress=false")
    assert resumed.returncode == 0, resumed.stderr
    assert [line.split(":")[0] for line in resumed.stderr.splitlines() if line.startswith("epoch ")] == [
        f"epoch {n}/12" for n in range(6, 13)
    ]  # trainer.progress=false: still one line per epoch
    assert f"resuming run {killed.info.run_id} at step {5 * 89} (epoch 6 of 12)" in resumed.stdout
    finished = cli.client.get_run(killed.info.run_id)
    assert finished.info.status == "FINISHED" and finished.data.metrics["epoch"] == 12

    def final_params(run_id):
        path = cli.client.download_artifacts(run_id, "checkpoints/last.npz", str(tmp_path / run_id))
        return checkpoint.load(path)["params"]

    expected, got = final_params(reference.info.run_id), final_params(killed.info.run_id)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    for metric in ("val_loss", "train_loss", "batch_loss"):  # every step once, with the same numbers
        history = [(m.step, m.value) for m in cli.client.get_metric_history(killed.info.run_id, metric)]
        uninterrupted = [(m.step, m.value) for m in cli.client.get_metric_history(reference.info.run_id, metric)]
        assert sorted(history) == sorted(uninterrupted), metric


def test_resume_of_an_unknown_run_is_a_clear_error(runner):
    with pytest.raises(ConfigError, match="no such MLflow run"):
        runner("trainer.resume=0123456789abcdef")


def test_a_misspelt_added_key_is_refused_with_a_suggestion(runner):
    with pytest.raises(ConfigError, match=re.escape("unknown setting trainer.epoch; did you mean trainer.epochs?")):
        runner("+trainer.epoch=3")
    assert runner.runs() == []


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.epochs=0", "trainer.epochs must be at least 1, got 0"),
        ("trainer.batch_size=0", "trainer.batch_size must be at least 1, got 0"),
        ("optimizer.lr=abc", "optimizer.lr must be a positive number, got 'abc'"),
        ("optimizer.lr=-1", "optimizer.lr must be a positive number, got -1"),
    ],
)
def test_values_a_run_cannot_train_with_are_refused_before_it_starts(runner, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        runner(override)
    assert runner.runs() == []


def test_a_model_that_does_not_fit_the_dataset_is_refused_before_a_run_starts(cli):
    result = cli("model=transformer_classifier", "dataset=digits")  # token ids wanted; digits are pixels
    assert result.returncode == 2
    assert (
        "model.vocabulary: Interpolation key 'dataset.vocabulary_size' not found: model TransformerClassifier "
        "does not fit dataset digits"
    ) in result.stderr
    assert "Traceback" not in result.stderr and cli.runs() == []


def test_resume_keeps_the_runs_configuration(runner, capsys):
    runner("trainer.epochs=2")
    run_id = runner.runs()[0].info.run_id
    with pytest.raises(ConfigError, match="not: optimizer"):
        runner(f"trainer.resume={run_id}", "optimizer=sgd")
    runner(f"trainer.resume={run_id}")
    assert "already trained 2 epochs: nothing to do" in capsys.readouterr().out
    assert runner.client.get_run(run_id).info.status == "FINISHED"  # a resume with nothing to do changes nothing
    runner(f"trainer.resume={run_id}", "trainer.epochs=3")
    assert "at step 44 (epoch 3 of 3)" in capsys.readouterr().out
    resumed = runner.client.get_run(run_id)
    assert resumed.data.metrics["epoch"] == 3 and resumed.data.tags["attempts"] == "3"
    assert [m.step for m in runner.client.get_metric_history(run_id, "val_loss")] == [22, 44, 66]  # no step twice
