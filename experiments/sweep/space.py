"""Hydra's sweep syntax as a Ray Tune search space.

The overrides users already type on a -m command line become Tune domains:
`a,b,c`, `choice(a,b,c)` and `range(start,stop[,step])` are choices, which form a
grid (every combination, `num_samples` times over); `interval(a,b)` is sampled
uniformly, `tag(log, interval(a,b))` log-uniformly, and `tag(int, ...)` gives
integers (both ends included). Overrides that are not sweeps are passed to every
trial as written.

Packed trials (hydra.sweeper.pack) need the trials before any runs: `variants`
draws them here, and `packs` groups those that differ only in PACKABLE values.
"""

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from ray import tune

SEARCHES = ("grid", "random", "optuna")
TAGS = {"log", "int"}
# what members of one pack may differ in: values that change neither shapes nor code
PACKABLE = (
    "optimizer.lr",
    "optimizer.weight_decay",
    "optimizer.momentum",
    "optimizer.b1",
    "optimizer.b2",
    "optimizer.eps",
    "model.dropout",
    "model.key",
    "seed",
)
ZERO_IS_CODE = ("optimizer.momentum", "model.dropout")  # 0: no velocity slot, no dropout layers


class SearchSpaceError(ValueError):
    """An override Tune cannot search over; the message names it."""


@dataclass
class SearchSpace:
    fixed: list[str] = field(default_factory=list)  # overrides every trial gets, as written
    choices: dict[str, list[Any]] = field(default_factory=dict)  # key -> the values to choose from
    intervals: dict[str, tuple[float, float, frozenset[str]]] = field(default_factory=dict)  # key -> (low, high, tags)

    @property
    def keys(self) -> list[str]:
        return [*self.choices, *self.intervals]

    def tune_space(self, search: str = "grid") -> dict[str, Any]:
        """The param_space for tune.Tuner: choices as a grid (grid search) or as
        categorical choices (random and Bayesian search), intervals sampled."""
        if search not in SEARCHES:
            raise SearchSpaceError(f"hydra.sweeper.search must be one of {', '.join(SEARCHES)}, got {search!r}")
        choose = tune.grid_search if search == "grid" else tune.choice
        space = {key: choose(list(values)) for key, values in self.choices.items()}
        space.update({key: _domain(low, high, tags) for key, (low, high, tags) in self.intervals.items()})
        return space

    def mutations(self) -> dict[str, Any]:
        """What population-based training may change: every swept key."""
        return {key: list(values) for key, values in self.choices.items()} | {
            key: _domain(low, high, tags) for key, (low, high, tags) in self.intervals.items()
        }

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """The override list of one trial, whose swept keys took `values` ({key: value})."""
        return self.fixed + [f"{key}={Override._get_value_element_as_str(values[key])}" for key in self.keys]

    def variants(self, search: str, num_samples: int, seed: int) -> list[dict[str, Any]]:
        """The trials' values ({key: value} each), drawn before any trial runs (what
        packing needs): grid search repeats the grid of choices num_samples times,
        random search draws everything num_samples times; intervals are sampled anew
        each time, from `seed`."""
        if search not in ("grid", "random"):
            raise SearchSpaceError(
                f"packed trials are formed before any trial runs: hydra.sweeper.search must be "
                f"grid or random, not {search!r} (Bayesian search picks each trial from the "
                "results so far)"
            )
        rng = np.random.default_rng(seed)
        grid = list(itertools.product(*self.choices.values())) if search == "grid" else [None]
        drawn: list[dict[str, Any]] = []
        for _ in range(num_samples):
            for point in grid:
                values = (
                    dict(zip(self.choices, point, strict=True))
                    if point is not None
                    else {key: options[rng.integers(len(options))] for key, options in self.choices.items()}
                )
                values.update({key: _sample(rng, *interval) for key, interval in self.intervals.items()})
                drawn.append(values)
        return drawn

    def describe(self) -> str:
        """`seed (4 values), optimizer.lr log-uniform in [0.0001, 0.01]`."""
        parts = [f"{key} ({len(values)} value{'s' if len(values) > 1 else ''})" for key, values in self.choices.items()]
        parts += [
            f"{key} {'integer ' if 'int' in tags else ''}{'log-uniform' if 'log' in tags else 'uniform'} in "
            f"[{low:g}, {high:g}]"
            for key, (low, high, tags) in self.intervals.items()
        ]
        return ", ".join(parts) or "no swept settings"


def parse(overrides: list[str]) -> SearchSpace:
    """The SearchSpace of a -m command line's overrides."""
    space = SearchSpace()
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key, value = override.get_key_element(), override.value()
        if not override.is_sweep_override():
            assert override.input_line is not None, "parse_overrides keeps each override's text"
            space.fixed.append(override.input_line)
        elif isinstance(value, (ChoiceSweep, RangeSweep)):
            if value.tags:
                raise SearchSpaceError(f"{override.input_line}: tags apply to interval(...) only")
            space.choices[key] = list(override.sweep_iterator())
        elif isinstance(value, IntervalSweep):
            unknown = set(value.tags) - TAGS
            if unknown:
                raise SearchSpaceError(
                    f"{override.input_line}: unknown tag {', '.join(sorted(unknown))} "
                    f"(known: {', '.join(sorted(TAGS))})"
                )
            low, high = value.start, value.end
            if low is None or high is None or not low < high:
                raise SearchSpaceError(f"{override.input_line}: an interval needs low < high")
            if "log" in value.tags and low <= 0:
                raise SearchSpaceError(f"{override.input_line}: a log interval needs a positive low end")
            space.intervals[key] = (low, high, frozenset(value.tags))
        else:
            raise SearchSpaceError(f"{override.input_line}: Tune cannot sweep over {type(value).__name__}")
    return space


def packs(variants: list[dict[str, Any]], size: int) -> list[list[int]]:
    """`variants` (a list of {key: value}) as packs of at most `size` trials' indices,
    each of trials whose values differ only in PACKABLE keys (and not in whether a
    ZERO_IS_CODE value is 0), in the order the trials were drawn."""
    groups: dict[tuple, list[int]] = {}
    for index, values in enumerate(variants):
        groups.setdefault(_code_and_shapes(values), []).append(index)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def auto_pack_size(trials: int, slots: int) -> int:
    """hydra.sweeper.pack=auto: as few packs as keep every trial slot busy, i.e. the
    trials spread evenly over the slots that can run at once (a pack is one trial)."""
    return max(1, math.ceil(trials / max(1, slots)))


def _code_and_shapes(values):
    """What must be equal for trials to share a pack."""
    settled = {key.lstrip("+"): value for key, value in values.items()}
    return tuple((k, repr(v)) for k, v in settled.items() if k not in PACKABLE) + tuple(
        (k, v == 0) for k, v in settled.items() if k in ZERO_IS_CODE
    )


def _sample(rng, low, high, tags):
    """One draw of interval(low, high) as Tune's domains draw it (integers: both ends included)."""
    if "int" in tags:
        if "log" in tags:
            return min(int(high), int(math.exp(rng.uniform(math.log(low), math.log(int(high) + 1)))))
        return int(rng.integers(int(low), int(high) + 1))
    return (
        float(math.exp(rng.uniform(math.log(low), math.log(high)))) if "log" in tags else float(rng.uniform(low, high))
    )


def _domain(low, high, tags):
    if "int" in tags:
        low, high = int(low), int(high) + 1  # Tune's integer ranges exclude the high end
        return tune.lograndint(low, high) if "log" in tags else tune.randint(low, high)
    return tune.loguniform(low, high) if "log" in tags else tune.uniform(low, high)
