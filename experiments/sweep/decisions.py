"""Why a trial stopped: a scheduler's decision, or not.

Tune stops a trial's worker the same way whether its scheduler stopped the trial
(ASHA: a bad trial, stopped early), paused it (population-based training), or the
sweep itself is ending (Ctrl-C, SIGTERM, its driver's death): the trial's
`tune.report` raises SystemExit. Only the driver knows which, so the sweep's
schedulers record each of their STOP and PAUSE decisions here, in a Ray actor of
the sweep's own, before Tune acts on it; a stopped trial's worker asks for its
verdict (`verdict`). No recorded decision means the trial was interrupted: its run
ends KILLED, resumable, never FINISHED or tagged stopped early.

The actor lives in the cluster (driver and workers reach it by handle); it dies
with the sweep's driver, and a worker that cannot reach it was interrupted too.
"""

from typing import Any

import ray
from ray.tune.schedulers import TrialScheduler
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

STOP, PAUSE = TrialScheduler.STOP, TrialScheduler.PAUSE
VERDICT_SECONDS = 30.0  # how long a stopped worker waits for the driver's answer


@ray.remote(num_cpus=0)
class Decisions:
    """The schedulers' decisions by trial name: `pending` until the trial's worker
    takes its verdict, `made` for the sweep's end (which trials a scheduler stopped)."""

    def __init__(self) -> None:
        self.pending: dict[str, str] = {}
        self.made: dict[str, str] = {}

    def record(self, trial: str, decision: str) -> None:
        self.pending[trial] = self.made[trial] = decision

    def take(self, trial: str) -> str | None:
        return self.pending.pop(trial, None)

    def stopped(self) -> list[str]:
        """The trials a scheduler stopped (not paused), by name."""
        return [trial for trial, decision in self.made.items() if decision == STOP]


def start() -> Any:
    """The sweep's Decisions actor (a handle), on the driver's own node (a node lost with
    its trials must not take the sweep's records with it)."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return Decisions.options(scheduling_strategy=here).remote()  # type: ignore[attr-defined]


def verdict(decisions: Any, trial: str) -> str | None:
    """In a stopped trial's worker: STOP (a scheduler stopped it), PAUSE (population-based
    training paused it), or None (the sweep is ending: an interruption)."""
    if decisions is None:
        return None
    try:
        return ray.get(decisions.take.remote(trial), timeout=VERDICT_SECONDS)
    except Exception:  # the driver (and so the actor) is gone: the sweep ended
        return None


def recorded(scheduler: TrialScheduler, decisions: Any) -> TrialScheduler:
    """`scheduler`, its STOP and PAUSE decisions recorded in `decisions` before Tune acts."""
    original = scheduler.on_trial_result

    def on_trial_result(tune_controller: Any, trial: Any, result: dict) -> str:
        decision = original(tune_controller, trial, result)
        if decision in (STOP, PAUSE):
            ray.get(decisions.record.remote(str(trial), decision))
        return decision

    scheduler.on_trial_result = on_trial_result  # type: ignore[method-assign]
    return scheduler
