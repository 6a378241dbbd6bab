"""The driver's record of a sweep's trials (a Tune callback, in the driver process):
each trial's epochs printed as they come, each trial's end, and at the end of the
sweep the reconciliation of Tune's trials with their MLflow runs, so that no run is
left RUNNING, whatever happened to its worker."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from mlflow import MlflowClient
from mlflow.entities import RunTag
from omegaconf import DictConfig
from ray import tune

from experiments import lineage
from experiments.sweep.trial_names import trial_number
from zkynet.training.callbacks import epoch_line

# packed trials: each pack's members, [(member number, {key: value}), ...] (a Tune trial is a pack)
Packs = list[list[tuple[int, dict[str, Any]]]]


class TrialBook(tune.Callback):
    """The driver's record of every trial (Tune's status and error), so that the sweep
    can end each trial's MLflow run the way the trial ended, even when its worker
    could not: it died, or the sweep was interrupted. It also prints each trial's
    epochs, one line each, prefixed by the trial."""

    # the book of the sweep this driver resumes, only while Tune loads the saved sweep (`restoring`)
    _restoring: ClassVar["TrialBook | None"] = None

    def __init__(self, client: MlflowClient | None, sweep_run_id: str | None, packs: Packs | None = None):
        self.client, self.sweep_run_id, self.packs = client, sweep_run_id, packs
        self.trials: dict[str, Any] = {}  # Tune's trials by id
        self.statuses: dict[str, str] = {}  # as of the last step (ending a sweep marks all TERMINATED)

    def __reduce__(self):
        """Tune saves its callbacks with the experiment and loads them when it resumes:
        what it loads then is the resuming driver's own book (see `restoring`)."""
        return _book_being_restored, ()

    @contextmanager
    def restoring(self) -> Iterator[None]:
        """While Tune loads a saved sweep in this process (tune.Tuner.restore), the book
        saved with it loads as this one."""
        TrialBook._restoring = self
        try:
            yield
        finally:
            TrialBook._restoring = None

    def on_step_end(self, iteration, trials, **info):
        self.trials.update((t.trial_id, t) for t in trials)
        self.statuses = {t.trial_id: t.status for t in trials}

    @property
    def interrupted(self) -> bool:
        """Whether the sweep stopped with trials still to run (Ctrl-C, SIGTERM)."""
        return any(status not in ("TERMINATED", "ERROR") for status in self.statuses.values())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epochs" not in result:  # one of Tune's own (a trial's final result), not an epoch
            return
        if "members" in result:
            print(
                f"[pack {trial_number(str(trial))}] epoch {result['epoch']}/{result['epochs']}: best {result['best']} "
                f"{result[result['best']]:.4g} (member {result['best_member']}), {result['members']} training",
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
        for trial in self.trials.values():
            number, status = str(trial_number(str(trial))), self.statuses.get(trial.trial_id, trial.status)
            error = trial.get_error() if status == "ERROR" else None
            if self.packs is not None:  # a pack's trial: its members' runs
                for member, _ in self.packs[int(number)]:
                    _end_run(client, by_number.get(str(member)), status, error, None)
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
            _end_run(client, run, status, error, trial.last_result)


def _book_being_restored() -> TrialBook:
    """The book Tune's saved sweep loads as: the resuming driver's (a blank one when the
    saved sweep is loaded outside `TrialBook.restoring`)."""
    return TrialBook._restoring or TrialBook(None, None)


def _end_run(client: MlflowClient, run: Any, status: str, error: Any, last_result: dict | None) -> None:
    """End a trial's run the way Tune says its trial ended, if nobody did: a worker ended
    while its trial, stopped by the scheduler, was still closing its run. Tune's last
    result says how far it got."""
    if run is None or run.info.status not in ("RUNNING", "SCHEDULED"):
        return
    epoch, epochs = (last_result or {}).get("epoch"), (last_result or {}).get("epochs")
    if error is None and status == "TERMINATED" and epoch is not None and epochs is not None and epoch < epochs:
        client.log_batch(
            run.info.run_id,
            tags=[RunTag(lineage.STOPPED_EARLY, "true"), RunTag(lineage.STOPPED_AT_EPOCH, str(int(epoch)))],
        )
    if error is not None:
        client.set_tag(run.info.run_id, lineage.ERROR, str(error).strip().splitlines()[-1][:5000])
        client.set_terminated(run.info.run_id, "FAILED")
    else:
        client.set_terminated(run.info.run_id, "FINISHED" if status == "TERMINATED" else "KILLED")


def _trial_overrides(trial: Any) -> list[str]:
    return [f"{k}={v}" for k, v in (trial.config or {}).items()]
