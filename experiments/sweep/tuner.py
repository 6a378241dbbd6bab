"""The Tune experiment of one invocation of a sweep (in the driver): its trials (the
plan's, through a Searcher that numbers them), packs, scheduler and search."""

import math
import sys
from collections.abc import Mapping
from typing import Any, cast

from omegaconf import DictConfig
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from experiments.sweep import decisions as scheduler_decisions
from experiments.sweep import plan as sweep_plan
from experiments.sweep import space as search_space
from experiments.sweep.plan import NUMBER, PACK, Plan
from experiments.sweep.settings import Scheduler, Search, SweeperSettings

# packed trials: each pack's members by pack number, {pack: [(member number, {key: value}), ...]}
Packs = dict[int, list[tuple[int, dict[str, Any]]]]


def packs(plan: Plan, size: int) -> Packs:
    """The plan's trials grouped into packs of at most `size` (search_space.packs), numbered from 1."""
    values = [{**t.values, "~epochs": t.epochs} for t in plan.trials]  # members train in step: resumed ones too
    grouped = search_space.packs(values, size)
    return {p: [(plan.trials[i].number, plan.trials[i].values) for i in pack] for p, pack in enumerate(grouped, 1)}


def search(
    settings: SweeperSettings,
    space: search_space.SearchSpace,
    plan: Plan,
    objective: str,
    mode: str,
    packed: Packs | None,
) -> tuple[Searcher, dict[str, Any], int]:
    """(Tune's search algorithm, its param_space, num_samples) for this invocation's trials."""
    configs: list[dict[str, Any]]
    param_space: dict[str, Any] = {}
    if packed is not None:
        configs = [{PACK: number} for number in packed]
        searcher: Searcher = sweep_plan.Planned(configs, objective, mode)
        total = len(configs)
    elif settings.search is Search.optuna:
        searcher, param_space = _optuna(settings, space, plan, objective, mode)
        total = plan.total
    else:
        configs = [{NUMBER: t.number, **t.values} for t in plan.trials]
        searcher = sweep_plan.Planned(configs, objective, mode)
        total = len(configs)
    if settings.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, settings.max_concurrent)
    return searcher, param_space, total


def _optuna(
    settings: SweeperSettings, space: search_space.SearchSpace, plan: Plan, objective: str, mode: str
) -> tuple[Searcher, dict[str, Any]]:
    """Optuna's searcher: new, or the sweep's last one continued (its study and sampler, the
    interrupted trials asked for again first)."""
    from ray.tune.search.optuna import OptunaSearch

    if plan.searcher_state is None:
        optuna = OptunaSearch(metric=objective, mode=mode, seed=settings.seed)
        param_space = space.tune_space("optuna")
    else:
        optuna = sweep_plan.restored_optuna(plan.searcher_state, settings, objective, mode)
        sweep_plan.continue_optuna(optuna, plan.trials)
        param_space = {}  # the restored searcher has its space
    return sweep_plan.Numbered(optuna, plan.trials, plan.next_number), param_space


def scheduler(
    settings: SweeperSettings, space: search_space.SearchSpace, config: DictConfig, packed: bool, decisions: Any
) -> TrialScheduler:
    """The scheduler Tune runs the trials with, its decisions recorded (experiments.sweep.
    decisions). Packs: population-based training and ASHA's rungs act among a pack's
    members inside the pack (experiments.sweep.reports); Tune's own ASHA still compares packs."""
    chosen: TrialScheduler
    if settings.scheduler is Scheduler.pbt and not packed:
        pbt = settings.pbt
        chosen = PlannedPBT(
            time_attr="epoch",
            perturbation_interval=pbt.interval,
            synch=True,
            hyperparam_mutations=space.mutations(),
            quantile_fraction=pbt.quantile_fraction,
            resample_probability=pbt.resample_probability,
        )
    elif settings.scheduler is Scheduler.asha:
        asha = settings.asha
        chosen = ASHAScheduler(
            time_attr="epoch",
            max_t=config.trainer.epochs,
            grace_period=asha.grace_period,
            reduction_factor=asha.reduction_factor,
        )
    else:
        chosen = FIFOScheduler()
    return scheduler_decisions.recorded(chosen, decisions)


class PlannedPBT(PopulationBasedTraining):
    """Ray's population-based training over the sweep's planned trials. Ray refuses any
    search algorithm beside PBT, since a searcher that learns from results would be misled
    by the configurations PBT's exploit rewrites; the sweep's searcher (sweep.plan.Planned)
    only hands out the planned trials and learns nothing, so PBT is shown none."""

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(cast(Any, _WithoutSearcher(tune_controller)), trial)  # duck-typed: a proxy


class _WithoutSearcher:
    """`controller` as PBT's check sees it: without a search algorithm."""

    search_alg = None

    def __init__(self, controller: Any):
        self._controller = controller

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)


def rungs(settings: SweeperSettings, epochs: int) -> tuple[tuple[float, ...], float]:
    """ASHA's rung epochs (grace_period * reduction_factor ** k, below max_t), applied
    among a pack's members; none for FIFO."""
    if settings.scheduler is not Scheduler.asha:
        return (), 3
    asha = settings.asha
    found: list[float] = []
    t: float = asha.grace_period
    while t < epochs:
        found.append(t)
        t *= asha.reduction_factor
    return tuple(found), asha.reduction_factor


def trial_name(trial: Any) -> str:
    """`trial_7` (a pack: `pack_2`): the number the plan gave it."""
    config = trial.config
    return f"pack_{config[PACK]}" if PACK in config else f"trial_{config[NUMBER]}"


def trained_out(trial_id: str, result: Mapping[str, Any]) -> bool:
    """A trial that trained all its epochs is done: no scheduler decides about it then
    (population-based training would otherwise exploit it once more)."""
    return "epochs" in result and result["epoch"] >= result["epochs"]  # Tune's own results have neither


def describe(settings: SweeperSettings, space: search_space.SearchSpace, plan: Plan, gpus: float) -> str:
    """The sweep as it runs: the search named as it is, the plan, what each trial asks for."""
    s = settings
    if s.search is Search.optuna:
        what = f"Bayesian search (Optuna's TPE), {s.num_samples} trials over {space.describe()}"
    elif s.search is Search.random or not space.choices:
        what = f"random search, {s.num_samples} draw{'s' if s.num_samples > 1 else ''} of {space.describe()}"
    else:
        grid = math.prod(len(values) for values in space.choices.values())
        times = "once" if s.num_samples == 1 else f"{s.num_samples} times"
        what = f"grid search, {grid} combination{'s' if grid > 1 else ''} of {space.describe()}, each {times}"
        if space.intervals:
            what += " (the intervals drawn anew each time)"
    asks = f"{s.resources.cpu:g} CPU" + (f" and {gpus:g} GPU" if gpus else "")
    return (
        f"sweep: {what}; {s.scheduler.value.upper()} scheduler; {plan.describe()}; every "
        f"{'pack' if s.packed else 'trial'} asks Ray for {asks}"
        + (f", at most {s.max_concurrent} at once" if s.max_concurrent else "")
    )


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
