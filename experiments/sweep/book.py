"""The driver's record of a sweep's trials (a Tune callback, in the driver process):
each trial's epochs printed as they come, each trial's end, and at the end of the
sweep the reconciliation of Tune's trials with their MLflow runs, so that no run is
left RUNNING, whatever happened to its worker, and none claims more than happened:
only a scheduler's decision (experiments.sweep.decisions) marks a run stopped early;
an interrupted trial's run ends KILLED."""

import signal
import sys
import threading
from typing import Any

import ray
from mlflow import MlflowClient
from mlflow.entities import RunTag
from omegaconf import DictConfig
from ray import tune

from experiments import lineage
from experiments.sweep.ranking import shown
from experiments.sweep.trial_names import trial_number
from zkynet.training.callbacks import epoch_line

# packed trials: each pack's members by pack number, {pack: [(member number, {key: value}), ...]}
Packs = dict[int, list[tuple[int, dict[str, Any]]]]


class TrialBook(tune.Callback):
    """The driver's record of every trial (Tune's status and error), so that the sweep
    can end each trial's MLflow run the way the trial ended, even when its worker
    could not: it died, or the sweep was interrupted. It also prints each trial's
    epochs, one line each, prefixed by the trial."""

    def __init__(self, client: MlflowClient | None, sweep_run_id: str | None, packs: Packs | None = None):
        self.client, self.sweep_run_id, self.packs = client, sweep_run_id, packs
        self.trials: dict[str, Any] = {}  # Tune's trials by id
        self.statuses: dict[str, str] = {}  # as of the last step (ending a sweep marks all TERMINATED)
        self.decisions: Any = None  # the sweep's Decisions actor
        self.expected = 0  # how many trials Tune was to run
        self.interrupted_by_signal = False

    def __reduce__(self):
        """Tune saves its callbacks with the experiment (which a sweep never restores: a
        resume is a new experiment): saved blank, without the store's client."""
        return TrialBook, (None, None)

    def setup(self, stop: Any = None, num_samples: Any = None, total_num_samples: Any = None, **info: Any) -> None:
        """Tune has just installed its Ctrl-C handler: note an interruption before Tune acts on it."""
        if threading.current_thread() is not threading.main_thread():
            return
        tune_handler = signal.getsignal(signal.SIGINT)

        def noted(number: int, frame: Any) -> None:
            self.interrupted_by_signal = True
            if callable(tune_handler):
                tune_handler(number, frame)

        signal.signal(signal.SIGINT, noted)

    def on_step_end(self, iteration, trials, **info):
        self.trials.update((t.trial_id, t) for t in trials)
        self.statuses = {t.trial_id: t.status for t in trials}

    @property
    def interrupted(self) -> bool:
        """Whether the sweep stopped with trials still to run (Ctrl-C, SIGTERM)."""
        ended = sum(status in ("TERMINATED", "ERROR") for status in self.statuses.values())
        return self.interrupted_by_signal or ended < self.expected

    @property
    def errors(self) -> int:
        return sum(status == "ERROR" for status in self.statuses.values())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epochs" not in result:  # one of Tune's own (a trial's final result), not an epoch
            return
        if "members" in result:
            print(
                f"[pack {trial_number(str(trial))}] epoch {result['epoch']}/{result['epochs']}: best {result['best']} "
                f"{shown(result[result['best']])} (trial {result['best_member']}), {result['members']} training",
                file=sys.stderr,
                flush=True,
            )
            return
        line = epoch_line({k: v for k, v in result.items() if isinstance(v, (int, float))}, result["epochs"])
        print(f"[trial {trial_number(str(trial))}] {line}", file=sys.stderr, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.trials[trial.trial_id] = trial
        number, last = trial_number(str(trial)), trial.last_result or {}
        if self.packs is not None:
            if "epochs" in last:
                print(f"[pack {number}] trained {last['epoch']} of {last['epochs']} epochs", file=sys.stderr)
            return
        if "epochs" in last:
            early = ", stopped early by the scheduler" if last["epoch"] < last["epochs"] else ""
            print(f"[trial {number}] trained {last['epoch']} of {last['epochs']} epochs{early}", file=sys.stderr)
            return
        run = self._run_of(number)  # it ended before its first epoch: its run says why
        if run is not None:
            print(
                f"[trial {number}] {run.info.status}: {run.data.tags.get(lineage.ERROR, 'no epoch trained')}",
                file=sys.stderr,
            )

    def _run_of(self, number: int) -> Any:
        if self.client is None or self.sweep_run_id is None:
            return None
        found = self.client.search_runs(
            [self.client.get_run(self.sweep_run_id).info.experiment_id],
            max_results=1,
            filter_string=f"tags.{lineage.PARENT} = '{self.sweep_run_id}' and tags.{lineage.SWEEP_JOB} = '{number}'",
            order_by=["attributes.start_time DESC"],
        )
        return found[0] if found else None

    def on_trial_start(self, iteration, trials, trial, **info):
        self.trials[trial.trial_id] = trial

    def on_trial_error(self, iteration, trials, trial, **info):
        self.trials[trial.trial_id] = trial

    def reconcile(self, client: MlflowClient, sweep_run_id: str, config: DictConfig) -> None:
        """End every trial's run that is still RUNNING (or SCHEDULED) the way Tune says
        its trial ended; a trial that failed before it had a run gets a FAILED one."""
        by_number = {
            r.data.tags.get(lineage.SWEEP_JOB): r for r in lineage.trials(client, client.get_run(sweep_run_id))
        }
        stopped = self._stopped()
        for trial in self.trials.values():
            number, status = str(trial_number(str(trial))), self.statuses.get(trial.trial_id, trial.status)
            error = trial.get_error() if status == "ERROR" else None
            early = str(trial) in stopped
            if self.packs is not None:  # a pack's trial: its members' runs
                for member, _ in self.packs[int(number)]:
                    _end_run(client, by_number.get(str(member)), status, error, None, early)
                continue
            run = by_number.get(number)
            if run is None and error is not None:  # it failed before it had a run: composing its config
                run = client.create_run(
                    client.get_run(sweep_run_id).info.experiment_id,
                    run_name=f"{config.run_name or 'trial'} #{number}",
                    tags={
                        lineage.PARENT: sweep_run_id,
                        lineage.SWEEP_JOB: number,
                        lineage.OVERRIDES: " ".join(_trial_overrides(trial)),
                    },
                )
            _end_run(client, run, status, error, trial.last_result, early)

    def _stopped(self) -> set[str]:
        """The trials (names) a scheduler stopped."""
        if self.decisions is None:
            return set()
        try:
            return set(ray.get(self.decisions.stopped.remote(), timeout=30))
        except Exception:
            return set()


def _end_run(client: MlflowClient, run: Any, status: str, error: Any, last_result: dict | None, early: bool) -> None:
    """End a trial's run the way its trial ended, if nobody did: FAILED when Tune gave up
    on it (its worker died more often than max_failures; a resume runs it again); FINISHED
    when a scheduler stopped it (tagged stopped early, at the epoch Tune last heard of) or it
    trained every epoch; otherwise it was interrupted: KILLED, resumable."""
    if run is None or run.info.status not in ("RUNNING", "SCHEDULED"):
        return
    epoch, epochs = (last_result or {}).get("epoch"), (last_result or {}).get("epochs")
    if error is not None:
        tags = [RunTag(lineage.ERROR, str(error).strip().splitlines()[-1][:5000]), RunTag(lineage.RESUMABLE, "true")]
        client.log_batch(run.info.run_id, tags=tags)
        client.set_terminated(run.info.run_id, "FAILED")
        return
    if early and epoch is not None and epochs is not None and epoch < epochs:
        client.log_batch(
            run.info.run_id,
            tags=[RunTag(lineage.STOPPED_EARLY, "true"), RunTag(lineage.STOPPED_AT_EPOCH, str(int(epoch)))],
        )
    done = early or (status == "TERMINATED" and epoch is not None and epoch == epochs)
    client.set_terminated(run.info.run_id, "FINISHED" if done else "KILLED")


def _trial_overrides(trial: Any) -> list[str]:
    return [f"{k}={v}" for k, v in (trial.config or {}).items() if k not in ("trial", "pack")]
