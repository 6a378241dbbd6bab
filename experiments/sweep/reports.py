"""What a trial's worker tells Tune, and what Tune's scheduler decides back, as the
callbacks of the trial's run (experiments.runner.run) or of its pack's population:
every epoch reported, a trial stopped early (ASHA) or paused (population-based
training), a packed member stopped by ASHA's rung rule among its pack. Runs in the
Ray worker (experiments.sweep.worker)."""

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from experiments import lineage
from experiments.lifecycle import Paused
from experiments.sweep import decisions
from experiments.sweep.cluster import given_devices
from experiments.tracking import Tracker, tracker_of
from zkynet.training import Callback, Checkpointer, PopulationTrainer, TrainingLoop
from zkynet.training.population import Member
from zkynet.training.trainer import Record

# tune.report(result, checkpoint=...), marked as the place where Tune may stop the trial (WorkerProcess.report)
Report = Callable[..., None]


class Verdict:
    """Why Tune stopped this trial (experiments.sweep.decisions): asked once it did."""

    def __init__(self, decisions: Any, trial: str):
        self.decisions, self.trial = decisions, trial

    def __call__(self) -> str | None:
        return decisions.verdict(self.decisions, self.trial)


def placement() -> dict[str, str]:
    """A trial's run's tags: the Ray node it runs on, the devices it was given (set when the
    run starts: experiments.sweep.worker)."""
    given = given_devices()
    node = given.pop("node")
    return {
        lineage.NODE: node,
        lineage.NODES: node,
        lineage.GPUS: given.pop("gpus"),
        lineage.DEVICE_ENVIRONMENT: " ".join(f"{k}={v}" for k, v in sorted(given.items()) if k != "host"),
    }


def placement_tags(tracker: Tracker | None) -> None:
    """A continued run (another attempt; a new one has them from its start): where it runs
    now, and every node it ran on, this one last."""
    if tracker is None or tracker.previous_status is None:
        return
    tags = placement()
    earlier = tracker.client.get_run(tracker.run_id).data.tags.get(lineage.NODES, "").split(",")
    tags[lineage.NODES] = ",".join([n for n in earlier if n] + [tags[lineage.NODE]])
    tracker.set_tags(tags)


class TuneReport(Callback):
    """Reports every epoch's record to Tune (the last one once the run is complete, so
    that Tune never ends a trial's worker while its run is still being written),
    and stops training when Tune's scheduler says so: ASHA stops a trial (its run ends FINISHED, tagged as
    stopped early); population-based training pauses it (its run ends SCHEDULED, continued when the
    trial resumes, maybe from another trial's checkpoint with new hyperparameters,
    logged each epoch as hp/<key> metrics). With `pbt_interval`, every that many
    epochs the report carries the checkpoint PBT exploits."""

    def __init__(
        self,
        started: float,
        hyperparameters: dict[str, Any],
        report: Report,
        pbt_interval: int = 0,
        verdict: Callable[[], str | None] = lambda: None,
    ):
        self.started = started  # when the trial reached its worker
        self.hyperparameters, self.report, self.pbt_interval = hyperparameters, report, pbt_interval
        self.verdict = verdict
        self.stopped = False
        self.last: dict[str, Any] | None = None  # the last epoch's report, made by the trial once its run is complete
        self.tracker: Tracker | None = None
        self.checkpointer: Checkpointer | None = None

    def on_fit_start(self, trainer: TrainingLoop) -> None:
        """Also logs startup_seconds: from the trial reaching its worker to its first step
        (imports on a fresh worker, config, data, model, MLflow run, graph picture)."""
        self.tracker = tracker_of(trainer)
        self.checkpointer = next((c for c in trainer.callbacks if isinstance(c, Checkpointer)), None)
        if self.tracker is not None:
            self.tracker.log_metrics({"startup_seconds": time.perf_counter() - self.started}, trainer.step)
            placement_tags(self.tracker)

    def on_epoch_end(self, trainer: TrainingLoop, epoch: int, record: Record) -> None:
        reported = {k: v for k, v in record.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        reported["epochs"] = trainer.epochs
        if self.pbt_interval and self.tracker is not None:
            self.tracker.log_metrics(
                {f"hp/{k}": v for k, v in self.hyperparameters.items() if isinstance(v, (int, float))}, trainer.step
            )
        if epoch + 1 >= trainer.epochs:
            self.last = reported
            return
        saved = None
        if self.pbt_interval and (epoch + 1) % self.pbt_interval == 0 and self.checkpointer is not None:
            self.checkpointer.save(trainer)
            self.checkpointer.wait()
            saved = tune.Checkpoint.from_directory(str(Path(self.checkpointer.path).parent))
        try:
            self.report(reported, checkpoint=saved)
        except SystemExit:  # Tune stops (or pauses) this trial here: why?
            verdict = self.verdict()
            if verdict == decisions.PAUSE:
                print(f"paused by population-based training after epoch {epoch + 1}", file=sys.stderr)
                raise Paused from None
            if verdict != decisions.STOP:  # the sweep is ending: a checkpoint of this epoch, then KILLED
                if self.checkpointer is not None:
                    self.checkpointer.save(trainer)
                    self.checkpointer.wait()
                print(f"interrupted after epoch {epoch + 1}: the sweep is ending", file=sys.stderr)
                raise KeyboardInterrupt("the sweep is ending") from None
            trainer.should_stop = self.stopped = True
            if self.tracker is not None:  # durable first: what its worker may not outlive
                self.tracker.set_tags({lineage.STOPPED_EARLY: "true", lineage.STOPPED_AT_EPOCH: epoch + 1})
                self.tracker.flush()
            print(f"stopped early by the scheduler after epoch {epoch + 1}", file=sys.stderr)


class MemberStart(Callback):
    """A packed member's startup_seconds: from its pack reaching the worker to its first step."""

    def __init__(self, started: float):
        self.started = started

    def on_fit_start(self, trainer: TrainingLoop) -> None:
        tracker = tracker_of(trainer)
        if tracker is not None:
            tracker.log_metrics({"startup_seconds": time.perf_counter() - self.started}, trainer.step)
            placement_tags(tracker)


class PackReport:
    """The scheduler inside a pack, after each of its epochs: ASHA's rung rule among the
    members (at a rung epoch, a member below the rung's cutoff, the (1 - 1/reduction_factor)
    quantile of its members' objectives as Tune's ASHA computes it, stops: its run ends
    FINISHED, tagged stopped early), or population-based training among them (`exploit`,
    experiments.sweep.exploit); then one report to Tune, carrying the best running
    member's objective: Tune's scheduler may stop the whole pack when even its best member is
    in the bottom of its rung. Tune reports one result stream per trial, so a pack's members
    cannot each be one of its trials. When Tune stops the pack and no scheduler decided it
    (the sweep is ending), every member's run ends KILLED, with a checkpoint of this epoch."""

    def __init__(
        self,
        objective: str | None,
        mode: str,
        rungs: tuple[float, ...],
        reduction_factor: float,
        numbers: list[int],
        report: Report,
        verdict: Callable[[], str | None] = lambda: None,
        exploit: Callable[[PopulationTrainer, int, dict[int, Record]], None] | None = None,
    ):
        self.objective, self.sign = objective, 1 if mode == "max" else -1
        self.rungs, self.reduction_factor, self.numbers = rungs, reduction_factor, numbers
        self.report, self.verdict, self.exploit = report, verdict, exploit
        self.stopped = self.interrupted = False
        self.last: dict[str, Any] | None = None  # the last epoch's report, made once every member's run is complete

    def on_epoch_end(self, population: PopulationTrainer, epoch: int, records: dict[int, Record]) -> None:
        objective = self.objective
        if objective is None:  # no member's configuration could be composed: nothing trains
            return
        scores = {
            k: self.sign * r[objective] for k, r in records.items() if objective in r and math.isfinite(r[objective])
        }
        if epoch + 1 in self.rungs and scores:
            cutoff = np.nanpercentile(list(scores.values()), (1 - 1 / self.reduction_factor) * 100)
            for k, score in scores.items():
                if score < cutoff:
                    _stop_early(population.members[k], epoch, "the pack's rung rule (ASHA)")
        if self.exploit is not None:
            self.exploit(population, epoch, records)
        running = {k: s for k, s in scores.items() if not population.members[k].should_stop} or scores
        if not running:
            return
        best = max(running, key=lambda k: running[k])
        reported = {
            objective: records[best][objective],
            "epoch": epoch + 1,
            "epochs": population.epochs,
            "members": len(running),
            "best_member": self.numbers[best],
            "best": objective,
        }
        if epoch + 1 >= population.epochs:
            self.last = reported
            return
        try:
            self.report(reported)
        except SystemExit:  # Tune stops the whole pack: its scheduler, or the sweep's end?
            if self.verdict() == decisions.STOP:
                self.stopped = True
                for k in records:
                    _stop_early(population.members[k], epoch, "the scheduler")
                return
            self.interrupted = True
            for member in population.members:
                if member.running:
                    member.should_stop, member.stop_status = True, "KILLED"
            print(f"interrupted after epoch {epoch + 1}: the sweep is ending", file=sys.stderr)


def _stop_early(member: Member, epoch: int, by: str) -> None:
    member.should_stop = True
    tracker = tracker_of(member)
    if tracker is not None:
        tracker.set_tags({lineage.STOPPED_EARLY: "true", lineage.STOPPED_AT_EPOCH: epoch + 1})
    print(f"member {member.index}: stopped early by {by} after epoch {epoch + 1}", file=sys.stderr)
