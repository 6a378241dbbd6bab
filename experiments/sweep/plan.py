"""Which trials a sweep runs now, under which numbers (in the driver).

Trials are numbered from 1, as their MLflow runs are named (`... #3`, tag sweep_job),
and keep their number when the sweep is resumed or extended. Grid and random search
draw every trial here (SearchSpace.variants, seeded), so a trial is its values: on
resume, a trial whose run finished is not run again, one interrupted continues its
own run (from its last checkpoint: the worker finds the run by its number), and the
trials no run has yet are new; a larger num_samples (or added grid values) adds
trials after the last number. Bayesian search (Optuna) suggests its trials as the
results come in: a resume continues the searcher of the sweep's last Tune
experiment (its state: Optuna's study and sampler), reruns the interrupted trials
with their values first and then asks for as many new ones as num_samples is
still short of.

Each invocation is a Tune experiment of its own (`tune`, then `tune-2`, ... in the
sweep folder); what carries over lives in MLflow (runs, statuses, checkpoints) and
in the Optuna searcher's saved state. Tune is given the trials through a Searcher
(`Planned`, or `Numbered` around Optuna's) whose suggestions carry each trial's
number (config key "trial"): the driver names trials by it (`trial_3`).
"""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from ray.tune.search import Searcher

from experiments import lineage
from experiments.sweep.settings import TUNE_FOLDER, Search, SweeperSettings
from experiments.sweep.space import SearchSpace

NUMBER = "trial"  # the config key of a trial's number (Tune's config: never a hyperparameter)
PACK = "pack"  # ...and of a pack's
# a trial whose run ended so is run again by a resume (FAILED: only when its worker, not its training, failed)
RERUN = ("KILLED", "RUNNING", "SCHEDULED")


@dataclass
class Trial:
    number: int
    values: dict[str, Any]
    epochs: int = 0  # epochs its run trained already (a resumed trial): packs group trials that stand equal


@dataclass
class Plan:
    """What this invocation of a sweep runs."""

    trials: list[Trial]  # to run now (grid, random: all of them; Optuna: those to continue), in order
    finished: list[int] = field(default_factory=list)  # trials done before (not run again)
    suggestions: int = 0  # Optuna: how many new trials to ask the searcher for
    next_number: int = 1  # ...numbered from here
    searcher_state: Path | None = None  # Optuna: the Tune experiment whose searcher goes on
    experiment: str = TUNE_FOLDER  # this invocation's Tune experiment (a folder in the sweep's)
    earlier: set[int] = field(default_factory=set)  # numbers of the trials that have a run already

    @property
    def total(self) -> int:
        return len(self.trials) + self.suggestions

    def describe(self) -> str:
        again = sum(t.number in self.earlier for t in self.trials)
        if not self.finished and not again:
            return f"{self.total} trial(s)"
        return f"{len(self.finished)} finished before, {again} to continue, {self.total - again} new"


def make(
    space: SearchSpace, settings: SweeperSettings, runs: Sequence[Any], experiments: Sequence[str], sweep_dir: Path
) -> Plan:
    """The plan of a sweep given the runs its trials already have (none for a new sweep)
    and its earlier Tune experiments (folder names)."""
    experiment = TUNE_FOLDER if not experiments else f"{TUNE_FOLDER}-{len(experiments) + 1}"
    latest = _latest_runs(runs)
    finished = sorted(n for n, run in latest.items() if not _rerun(run))
    if settings.search is Search.optuna:
        return _optuna_plan(space, settings, latest, experiments, sweep_dir, experiment, finished)
    by_overrides: dict[str, list[int]] = {}
    for number, run in sorted(latest.items()):
        by_overrides.setdefault(run.data.tags.get(lineage.OVERRIDES, ""), []).append(number)
    fresh = itertools.count(max(latest, default=0) + 1)
    trials = []
    for values in space.variants(settings.search.value, settings.num_samples, settings.seed):
        known = by_overrides.get(" ".join(space.overrides(values)))
        number = known.pop(0) if known else next(fresh)
        if number not in finished:
            trials.append(Trial(number, values, _epochs(latest.get(number))))
    return Plan(trials, finished, experiment=experiment, next_number=next(fresh), earlier=set(latest))


def _optuna_plan(space, settings, latest, experiments, sweep_dir, experiment, finished) -> Plan:
    """Optuna: the interrupted trials again (their values from their runs, and from the
    searcher's suggestions that never got a run), then new suggestions."""
    continued = [
        Trial(number, values_of(space, run.data.tags.get(lineage.OVERRIDES, "")))
        for number, run in sorted(latest.items())
        if _rerun(run)
    ]
    state = sweep_dir / experiments[-1] if experiments else None
    next_number = max(latest, default=0) + 1
    if state is not None:
        for values in suggested_not_run(state, settings):
            if all(values != t.values for t in continued):
                continued.append(Trial(next_number, values))
                next_number += 1
    known = len(latest) + sum(t.number not in latest for t in continued)
    return Plan(
        continued,
        finished,
        suggestions=max(0, settings.num_samples - known),
        next_number=next_number,
        searcher_state=state,
        experiment=experiment,
        earlier=set(latest),
    )


def suggested_not_run(state: Path, settings: SweeperSettings) -> list[dict[str, Any]]:
    """The values of the trials an earlier experiment's Optuna searcher suggested and never
    heard back about (interrupted), from its saved state."""
    import optuna

    searcher = restored_optuna(state, settings, "val_loss", "min")
    running = optuna.trial.TrialState.RUNNING
    return [dict(t.params) for t in searcher._ot_study.get_trials(deepcopy=False, states=(running,))]


def restored_optuna(state: Path, settings: SweeperSettings, metric: str, mode: str) -> Any:
    """Tune's OptunaSearch as an earlier experiment of this sweep saved it (study, sampler)."""
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(metric=metric, mode=mode, seed=settings.seed)
    searcher.restore_from_dir(str(state))
    return searcher


def values_of(space: SearchSpace, overrides: str) -> dict[str, Any]:
    """The swept values of a trial's overrides (its run's tag), typed as the sweep gave them."""
    swept = set(space.keys)
    parsed = OverridesParser.create().parse_overrides(overrides.split())
    return {o.get_key_element(): o.value() for o in parsed if o.get_key_element() in swept}


def _latest_runs(runs: Sequence[Any]) -> dict[int, Any]:
    """Each trial's run by number (the newest, should a number have several)."""
    latest: dict[int, Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        number = run.data.tags.get(lineage.SWEEP_JOB, "")
        if number.isdigit():
            latest[int(number)] = run
    return latest


def _epochs(run: Any) -> int:
    return int(run.data.metrics.get("epoch", 0)) if run is not None else 0


def _rerun(run: Any) -> bool:
    status = run.info.status
    return status in RERUN or (status == "FAILED" and run.data.tags.get(lineage.RESUMABLE) == "true")


class Planned(Searcher):
    """The planned trials, suggested to Tune one after another: {"trial": number, **values}
    (a pack: {"pack": number})."""

    def __init__(self, configs: list[dict[str, Any]], metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.configs = list(configs)
        self.given = 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.given >= len(self.configs):
            return Searcher.FINISHED  # type: ignore[return-value]
        self.given += 1
        return dict(self.configs[self.given - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        """Nothing to keep: a resume plans anew (from the runs)."""

    def restore(self, checkpoint_path: str) -> None:
        pass


class Numbered(Searcher):
    """A searcher's suggestions with their trial numbers: a suggestion equal to a trial to
    continue takes its number, any other the next new one."""

    def __init__(self, searcher: Searcher, continued: list[Trial], next_number: int):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher  # `searcher`: Tune saves the innermost searcher's state on its own
        self.continued, self.next_number = list(continued), next_number

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        suggestion = self.searcher.suggest(trial_id)
        if not isinstance(suggestion, dict):
            return suggestion
        same = next((t for t in self.continued if t.values == suggestion), None)
        if same is not None:
            self.continued.remove(same)
            number = same.number
        else:
            number, self.next_number = self.next_number, self.next_number + 1
        return {**suggestion, NUMBER: number}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict:
        return {"continued": self.continued, "next_number": self.next_number}

    def set_state(self, state: dict) -> None:
        self.continued, self.next_number = state["continued"], state["next_number"]


def continue_optuna(searcher: Any, continued: list[Trial]) -> None:
    """A restored Optuna searcher: the interrupted trials' suggestions, which it will never
    hear back about, marked failed (TPE ignores them), and their values asked for again
    first (no draw of the sampler: the new suggestions come as they would have)."""
    import optuna

    study = searcher._ot_study
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    searcher._ot_trials = {}
    for trial in continued:
        study.enqueue_trial(trial.values, skip_if_exists=False)
