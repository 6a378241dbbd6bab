"""No run is left RUNNING: signals and errors at any moment end it KILLED or FAILED
(in-process, with the signal sent from inside the run: deterministic, no race)."""

import os
import signal

import pytest

from experiments import tracking
from zkynet.training import Callback


class SignalAt(Callback):
    """Sends `number` to this very process when epoch `epoch` ends."""

    def __init__(self, number, epoch=1):
        self.number, self.epoch = number, epoch

    def on_epoch_end(self, trainer, epoch, record):
        if epoch + 1 == self.epoch:
            os.kill(os.getpid(), self.number)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_training_ends_the_run_killed(runner, monkeypatch, number):
    original = signal.getsignal(number)
    monkeypatch.setattr("experiments.build.callbacks", lambda cfg: [SignalAt(number, epoch=2)])
    with pytest.raises(KeyboardInterrupt):
        runner("trainer.epochs=5")
    (run,) = runner.runs()
    assert run.info.status == "KILLED" and run.data.metrics["epoch"] == 2
    assert signal.getsignal(number) is original  # the run gives the signal back


def test_a_signal_while_the_mlflow_run_is_created_still_ends_it(runner, monkeypatch):
    create = tracking.Tracker.__init__

    def interrupted_while_creating(self, *args, **kwargs):
        create(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # lands inside the constructor: it waits until the Run owns the run

    monkeypatch.setattr(tracking.Tracker, "__init__", interrupted_while_creating)
    with pytest.raises(KeyboardInterrupt):
        runner("trainer.epochs=2")
    (run,) = runner.runs()
    assert run.info.status == "KILLED" and "epoch" not in run.data.metrics


def test_an_error_while_logging_the_config_ends_the_run_failed(runner, monkeypatch):
    def refuse(self, path, artifact_path=None):
        raise PermissionError(f"[Errno 13] Permission denied: {path}")  # a read-only artifact store

    monkeypatch.setattr(tracking.Tracker, "log_artifact", refuse)
    with pytest.raises(PermissionError):
        runner("trainer.epochs=1")
    (run,) = runner.runs()
    assert run.info.status == "FAILED" and "Permission denied" in run.data.tags["error"]


def test_a_store_that_stops_taking_metrics_fails_the_run_loudly(runner, monkeypatch):
    log_batch = tracking.MlflowClient.log_batch

    def full_disk(self, run_id, metrics=(), **kwargs):
        if metrics:
            raise OSError(28, "No space left on device")
        return log_batch(self, run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(tracking.MlflowClient, "log_batch", full_disk)
    with pytest.raises(RuntimeError, match="could not write metrics to the MLflow store sqlite:///"):
        runner("trainer.epochs=2", "trainer.checkpoint_min_seconds=0")
    (run,) = runner.runs()
    assert run.info.status == "FAILED" and run.data.metrics == {}


def test_an_exception_chain_that_loops_is_still_classified():
    from experiments.lifecycle import _interrupted

    cause = ValueError("missing file")
    wrapper = RuntimeError("while building")
    wrapper.__cause__, cause.__context__ = cause, wrapper  # what `raise e.__cause__ from None` leaves
    assert _interrupted(wrapper) is False
    cause.__cause__ = KeyboardInterrupt()
    assert _interrupted(wrapper) is True
