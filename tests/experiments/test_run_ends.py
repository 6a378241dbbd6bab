"""Issue 26's rules for the runner: a run is FINISHED only when everything it promises
exists, one process at a time trains a run, no run is left RUNNING by a process that
died, and every error a user can fix is one line (exit code 2), also after the run
started, with the full traceback in the run's folder and its MLflow run."""

import re
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

import zkynet
from experiments import lineage, ownership
from experiments.run import users_to_fix
from experiments.schema import ConfigError
from experiments.tracking import TrackingError
from tests.experiments.test_own_work import _with
from tests.fixtures.own_work import SignalAtFitEnd

MINE = "+callbacks.mine._target_=tests.fixtures.own_work."


def test_an_interrupt_after_the_last_epoch_leaves_it_killed_and_a_resume_completes_it(runner, monkeypatch):
    monkeypatch.setattr("experiments.build.callbacks", _with(SignalAtFitEnd()))
    with pytest.raises(KeyboardInterrupt):
        runner("trainer.epochs=2")
    (run,) = runner.runs()
    run_id = run.info.run_id
    assert run.info.status == "KILLED" and "curves.png" not in runner.artifacts(run_id)  # nothing promised is faked
    with pytest.raises(FileNotFoundError, match=rf"run {run_id} is in the MLflow store .* but has no model"):
        zkynet.load(run_id, tracking_uri=runner.store)
    monkeypatch.undo()
    result = runner(f"trainer.resume={run_id}")  # nothing left to train: the missing artifacts are made
    done = runner.client.get_run(run_id)
    assert done.info.status == result.status == "FINISHED" and {"curves.png", "checkpoints/last.npz"} <= set(
        runner.artifacts(run_id)
    )
    assert [m.step for m in runner.client.get_metric_history(run_id, "val_loss")] == [22, 44]  # nothing twice
    assert type(zkynet.load(run_id, tracking_uri=runner.store).model).__name__ == "MLP"
    models = lineage.logged_models(runner.client, done)
    runner(f"trainer.resume={run_id}")  # complete: nothing is logged again
    assert [m.model_id for m in lineage.logged_models(runner.client, done)] == [m.model_id for m in models]


def test_a_model_that_cannot_be_logged_fails_the_run_and_a_resume_completes_it(runner, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("experiments.tracking.Tracker.log_model", refuse)
    with pytest.raises(TrackingError, match=r"cannot write the model of run .* No space left on device"):
        runner("trainer.epochs=1", "tracking.log_graph=false")
    (run,) = runner.runs()
    assert run.info.status == "FAILED" and "No space left" in run.data.tags["error"]
    monkeypatch.undo()
    runner(f"trainer.resume={run.info.run_id}")
    assert runner.client.get_run(run.info.run_id).info.status == "FINISHED"
    assert lineage.logged_models(runner.client, run)


def test_a_run_the_store_could_not_end_is_ended_by_the_next_run(runner, monkeypatch):
    monkeypatch.setattr(
        MlflowClient,
        "set_terminated",
        lambda self, *a, **k: (_ for _ in ()).throw(OSError(28, "database or disk is full")),
    )
    with pytest.raises(TrackingError, match=r"could not end run .* it stays RUNNING there until the next zkynet run"):
        runner("trainer.epochs=1", "tracking.log_graph=false", "tracking.log_model=false")
    (left,) = runner.runs()
    assert left.info.status == "RUNNING"
    monkeypatch.undo()  # space is freed
    runner("trainer.epochs=1", "tracking.log_graph=false", "tracking.log_model=false")
    ended = runner.client.get_run(left.info.run_id)
    assert ended.info.status == "KILLED" and "stopped training it without ending it" in ended.data.tags["error"]
    assert f"trainer.resume={left.info.run_id}" in ended.data.tags["error"]


def test_a_dead_run_with_no_checkpoint_is_ended_by_its_resume_naming_the_settings(runner):
    from omegaconf import OmegaConf

    from experiments.tracking import Tracker

    dead = Tracker(runner.store, "classification", run_name="dead")  # made, then nothing: the process died
    config = runner.folder / "config.yaml"
    config.write_text(OmegaConf.to_yaml(runner.config("trainer.checkpoint_every_n_epochs=3"), resolve=True))
    dead.log_artifact(config, "config")
    with pytest.raises(ConfigError, match=re.escape("trainer.checkpoint_every_n_epochs=3")) as refused:
        runner(f"trainer.resume={dead.run_id}")
    assert "it was left RUNNING by a process that died, and is now ended KILLED" in str(refused.value)
    assert users_to_fix(refused.value) is refused.value  # one line on the command line, exit code 2
    assert runner.client.get_run(dead.run_id).info.status == "KILLED"


@pytest.mark.slow
def test_kill_9_before_the_first_checkpoint_is_never_left_running(cli):
    died = cli("trainer.epochs=1", "tracking.log_graph=false", f"{MINE}DieAtStart")
    assert died.returncode == -9
    (run,) = cli.runs()
    assert run.info.status == "RUNNING"  # the process could do nothing about it...
    resumed = cli(f"trainer.resume={run.info.run_id}")  # ...the next process on the store does
    assert resumed.returncode == 2 and "error: " in resumed.stderr and "Traceback" not in resumed.stderr
    assert cli.client.get_run(run.info.run_id).info.status == "KILLED"


@pytest.mark.slow
def test_two_resumes_at_once_one_trains_the_other_is_refused_naming_it(cli):
    first = cli("trainer.epochs=1", "tracking.log_graph=false", "tracking.log_model=false")
    run_id = re.search(r"MLflow run (\w+)", first.stderr).group(1)
    slow = cli.start(f"trainer.resume={run_id}", "trainer.epochs=100000", "trainer.progress=false")  # until stopped
    deadline = time.time() + 300
    while not list(ownership.claims_folder(cli.store).glob("*.lock")):  # the first one claimed it
        assert time.time() < deadline and slow.poll() is None, slow.stderr.read() if slow.poll() else ""
        time.sleep(0.2)
    second = cli(f"trainer.resume={run_id}", "trainer.epochs=40")
    slow.terminate()
    slow.communicate(timeout=300)
    assert second.returncode == 2 and f"error: run {run_id} is being trained by pid {slow.pid} on" in second.stderr
    assert "Traceback" not in second.stderr
    assert slow.returncode == 130 and cli.client.get_run(run_id).info.status == "KILLED"  # SIGTERM: KILLED, resumable


REFUSED_BEFORE_A_RUN = [  # errors a user can fix: one line and exit code 2 on the command line (run.users_to_fix)
    (("model=cnn", "dataset=copy"), "model.input_shape is ${dataset.image_shape}, which dataset copy does not give"),
    (("task=vae",), "model MLP (model=MLP) does not fit task vae on dataset digits"),
    (("dataset=text", "dataset.loader.max_chars=20000"), "model MLP (model=MLP) does not fit task language_model"),
    (("tracking.registered_model=bad name/with:slash",), "tracking.registered_model='bad name/with:slash' is not"),
]


@pytest.mark.parametrize("overrides, message", REFUSED_BEFORE_A_RUN, ids=[" ".join(o) for o, _ in REFUSED_BEFORE_A_RUN])
def test_what_does_not_fit_is_refused_before_a_run_in_one_line(runner, overrides, message):
    with pytest.raises(Exception, match=re.escape(message)) as refused:
        runner(*overrides, "trainer.epochs=1")
    assert users_to_fix(refused.value) is refused.value and "\n" not in str(refused.value)
    assert runner.runs() == []


def test_a_read_only_artifact_store_is_named_and_the_run_failed(runner, monkeypatch):
    def refuse(self, run_id, local, artifact_path=None):
        raise PermissionError(13, "Permission denied", local)

    monkeypatch.setattr(MlflowClient, "log_artifact", refuse)
    with pytest.raises(TrackingError, match=r"cannot write the artifact config.yaml of run \w+ to file://") as error:
        runner("trainer.epochs=1")
    assert users_to_fix(error.value) is error.value
    (run,) = runner.runs()
    assert run.info.status == "FAILED" and "Permission denied" in run.data.tags["error"]


CLI_ERRORS = [  # one line, exit 2: before a run exists, and once it has started (then FAILED, traceback kept)
    (("task=regression",), "error: model MLP (model=MLP) does not fit task regression on dataset digits", False),
    ((f"{MINE}BadMetric",), "error: BadMetric.on_epoch_end (record['my_metric']): metric 'my_metric' is nan", True),
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides, line, started", CLI_ERRORS, ids=[" ".join(o) for o, _, _ in CLI_ERRORS])
def test_an_error_a_user_can_fix_is_one_line_with_exit_code_2(cli, overrides, line, started):
    result = cli(*overrides, "trainer.epochs=1", "tracking.log_graph=false")
    assert result.returncode == 2 and line in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    runs = cli.runs()
    if not started:
        assert runs == []
        return
    (run,) = runs
    assert run.info.status == "FAILED" and "my_metric" in run.data.tags["error"]
    folder = Path(re.search(r"files: (\S+)", result.stderr).group(1))
    assert "Traceback" in (folder / "error.txt").read_text() and "error.txt" in cli.artifacts(run.info.run_id)
