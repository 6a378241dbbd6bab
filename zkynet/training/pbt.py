"""Population-based training inside a population (zkynet.training.population): no
checkpoint files, no process restarts. Every `interval` epochs the members in the
bottom `quantile_fraction` by `metric` exploit one of the top `quantile_fraction`
(chosen at random): they take on its parameters, optimizer state and hyperparameters,
copied along the member axis inside a compiled program (PopulationStep.exploit); then
they explore: each mutable hyperparameter is drawn anew with `resample_probability`,
else multiplied by 0.8 or 1.2 (a choice: moved to a neighbouring value), and enters
the same program as a traced value (PopulationStep.set_hyperparameters). Members keep
their own data order and dropout keys, as Ray Tune's PBT keeps each trial's.

    pbt = PopulationBasedTraining("val_loss", "min", interval=2, mutations={"lr": Mutation(1e-4, 1e-1, log=True)})
    population = PopulationTrainer(..., traced=pbt.traced, on_epoch_end=lambda p, e, r: pbt(p, e, r))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

PERTURBATIONS = (0.8, 1.2)


@dataclass(frozen=True)
class Mutation:
    """How one hyperparameter may change: among `choices`, or within [low, high] (log-uniform
    draws with `log`; whole numbers with `integer`)."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    def __post_init__(self):
        if self.choices is None and (self.low is None or self.high is None or not self.low < self.high):
            raise ValueError(f"a Mutation needs choices or an interval low < high, got {self}")

    def draw(self, rng: np.random.Generator) -> Any:
        if self.choices is not None:
            return self.choices[rng.integers(len(self.choices))]
        assert self.low is not None and self.high is not None
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return round(value) if self.integer else float(value)

    def perturb(self, value: Any, rng: np.random.Generator) -> Any:
        if self.choices is not None:
            at = _nearest(self.choices, value)
            return self.choices[int(np.clip(at + rng.choice((-1, 1)), 0, len(self.choices) - 1))]
        assert self.low is not None and self.high is not None
        moved = min(max(value * float(rng.choice(PERTURBATIONS)), self.low), self.high)
        return round(moved) if self.integer else float(moved)


@dataclass
class Exploit:
    """One member's exploit and explore at the end of an epoch."""

    epoch: int  # epochs trained
    member: int
    source: int
    hyperparameters: dict[str, Any]  # its new values


class PopulationBasedTraining:
    """The rule above, for a PopulationTrainer's `on_epoch_end` (called with the population,
    the epoch and the running members' records); returns the exploits it made.
    `mutations` names the population's hyperparameters ("lr", "b1", ..., "dropout") that
    explore; give the trainer `traced=pbt.traced`."""

    def __init__(
        self,
        metric: str,
        mode: str,
        interval: int,
        mutations: Mapping[str, Mutation],
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        seed: int = 0,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive number of epochs, got {interval!r}")
        if not 0 < quantile_fraction <= 0.5:
            raise ValueError(f"quantile_fraction must be in (0, 0.5], got {quantile_fraction!r}")
        if not 0 <= resample_probability <= 1:
            raise ValueError(f"resample_probability must be in [0, 1], got {resample_probability!r}")
        if not mutations:
            raise ValueError("population-based training needs at least one hyperparameter to mutate")
        self.metric, self.sign, self.interval = metric, 1 if mode == "max" else -1, interval
        self.mutations = dict(mutations)
        self.quantile_fraction, self.resample_probability = quantile_fraction, resample_probability
        self.rng = np.random.default_rng(seed)

    @property
    def traced(self) -> tuple[str, ...]:
        return tuple(self.mutations)

    def __call__(self, population: Any, epoch: int, records: Mapping[int, Mapping[str, Any]]) -> list[Exploit]:
        trained = epoch + 1
        if trained % self.interval or trained >= population.epochs:
            return []
        scores = {
            k: self.sign * float(r[self.metric])
            for k, r in records.items()
            if self.metric in r and population.members[k].running and not population.members[k].should_stop
        }
        order = sorted(scores, key=lambda k: (-scores[k] if math.isfinite(scores[k]) else math.inf, k))
        count = min(math.ceil(len(order) * self.quantile_fraction), len(order) // 2)
        if count < 1:
            return []
        best, worst = order[:count], order[-count:]
        step = population.step
        sources = {k: int(best[self.rng.integers(len(best))]) for k in worst}
        step.exploit(sources)
        exploits = []
        for member, source in sources.items():
            values = step.member_hyperparameters(member)
            new = {name: self._explore(mutation, values.get(name)) for name, mutation in self.mutations.items()}
            step.set_hyperparameters(member, new)
            exploits.append(Exploit(trained, member, source, new))
        return exploits

    def _explore(self, mutation: Mutation, value: Any) -> Any:
        if value is None or self.rng.uniform() < self.resample_probability:
            return mutation.draw(self.rng)
        return mutation.perturb(value, self.rng)


def _nearest(choices: tuple[Any, ...], value: Any) -> int:
    """The index of `value` among `choices` (numbers: the nearest, a traced float32 being
    a rounded copy of its choice)."""
    if value in choices:
        return choices.index(value)
    numbers = [abs(float(c) - float(value)) if isinstance(c, (int, float)) else math.inf for c in choices]
    return int(np.argmin(numbers))
