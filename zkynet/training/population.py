"""Populations: K models of one architecture trained as one compiled program.

Members may differ in whatever changes neither shapes nor code: initial
parameters, optimizer hyperparameters (learning rate, betas, momentum, weight
decay), dropout rates, the seed of their dropout keys and their data order.
Their parameters and optimizer states are stacked along a leading axis and
`TrainStep.pure` is vmapped over it, the hyperparameters and dropout rates
that differ between members passed in as traced values: one XLA program, one
dispatch per step for all K. That pays where a model's step is small (dispatch
and tiny kernels: several times the throughput); a step that already keeps the
cores busy gains little (`python -m experiments.bench sweep --part pack`). Each member
trains as it would alone (equal up to float32 rounding, see
tests/training/test_population.py) and can stop, or fail, without the others.

    population = PopulationTrainer(models, loss, optimizers, dataset, epochs=20, batch_size=64, seeds=[0, 1, 2])
    histories = population.fit()   # one Trainer-style history per member
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.data import Batches, Dataset
from zkynet.framework import cg
from zkynet.framework.compile import EvalStep, TrainStep
from zkynet.optim import Optimizer
from zkynet.training.stacking import (
    check_architectures,
    check_optimizers,
    columns,
    dropout_layers,
    rates_set,
    same,
    traced_rate,
)
from zkynet.training.trainer import Callback, Record, TrainingLoop, _check_finite, _check_seed, _CompileClock


class PopulationStep:
    """One optimizer step of every running member, each on its own rows of the data.

    `models` share an architecture (parameter names and shapes, dropout layers),
    `optimizers` a signature (type, clipping, schedule shape); the first of each is
    traced. `seeds` give each member's dropout keys, as TrainStep's seed does.
    The stacked parameters (`params`) and optimizer states (`opt_state`) of the
    running members live here, row i for member `slots[i]`. A member that
    `leave`s is taken out of the stack (its final state is kept aside): later
    steps train only the others, in a program compiled for their number (a
    stopped member costs one compilation, not a share of every later step).
    `precision` is TrainStep's, for every member. `traced` names hyperparameters
    (the optimizers', or "dropout" for every dropout rate) that are traced values
    even when every member has the same: what population-based training changes
    while the program runs (`exploit`, `set_hyperparameters`)."""

    def __init__(
        self,
        models: Sequence[cg.Module],
        loss: Callable,
        optimizers: Sequence[Optimizer],
        metrics: Callable | None = None,
        seeds: Sequence[int] | None = None,
        jit: bool = True,
        precision: str = "float32",
        traced: Collection[str] = (),
    ):
        if not models or len(models) != len(optimizers):
            raise ValueError(
                f"a population needs one optimizer per model, got {len(models)} models and {len(optimizers)} optimizers"
            )
        self.size = len(models)
        self.models = list(models)
        self.dropouts = [dropout_layers(m) for m in models]
        check_architectures(models, self.dropouts)
        check_optimizers(optimizers)
        template = models[0]
        self.train_step = TrainStep(
            template,
            loss,
            optimizers[0],
            metrics,
            jit=False,  # its pure(), vmapped
            precision=precision,
        )
        self.eval_step = EvalStep(template, loss, metrics, jit=False, precision=precision)
        self.params = {
            name: jnp.stack([m.named_parameters()[name].value for m in models]) for name in self.train_step.params
        }
        # zero slots of the trainable parameters (not frozen ones, not state): each optimizer's own init
        self.opt_state = jax.vmap(lambda p: optimizers[0].init(self.train_step.trainable_values(p)))(self.params)
        # What every member shares stays a constant of the program, as in a Trainer's step (a
        # weight decay of 0 then costs nothing, and the step reads and writes less memory);
        # only what differs is traced, one value per member.
        hyperparameters = columns([o.hyperparameters() for o in optimizers])
        traced = set(traced) | {f"1-{name}" for name in traced}  # Adam's 1 - b1 and 1 - b2 follow b1 and b2
        self.shared = {
            name: values[0] for name, values in hyperparameters.items() if same(values) and name not in traced
        }
        self.hyperparameters = {
            name: jnp.asarray(values) for name, values in hyperparameters.items() if name not in self.shared
        }
        dtype = jnp.result_type(float)
        rates = columns([{i: layer.rate for i, layer in enumerate(layers)} for layers in self.dropouts])
        self.rates = {
            i: jnp.asarray([traced_rate(rate, dtype) for rate in column], dtype)
            for i, column in rates.items()
            if not same(column) or "dropout" in traced
        }  # shared rates: member 0's layers'
        seeds = list(range(self.size)) if seeds is None else list(seeds)
        self.keys = jnp.stack([jax.random.PRNGKey(seed) for seed in seeds])
        self.slots = list(range(self.size))  # the member index of each row of the stacks
        self.left: dict[int, dict] = {}  # the final state of each member that left
        self._train = jax.jit(self.pure, donate_argnums=(0, 1)) if jit else self.pure
        evaluate = jax.vmap(self.eval_step.pure, in_axes=(0, None))
        self._evaluate = jax.jit(evaluate) if jit else evaluate

    def pure(self, params, opt_state, hyperparameters, rates, keys, data, rows):
        """One step of every row's member on `data[rows[i]]` (rows: (members, batch) indices
        into the arrays `data`) -> (params, opt_state, metrics), all stacked."""
        batches = jax.vmap(lambda r: tuple(a[r] for a in data))(rows)
        return jax.vmap(self._member)(params, opt_state, hyperparameters, rates, batches, keys)

    def _member(self, params, opt_state, hyperparameters, rates, batch, key):
        with rates_set(self.dropouts[0], rates):
            return self.train_step.pure(params, opt_state, batch, key, {**self.shared, **hyperparameters})

    def __call__(self, data, rows):
        """Train on `data` (device arrays) at `rows` (one row of indices per slot); returns
        the step's metrics, stacked by slot."""
        self.params, self.opt_state, metrics = self._train(
            self.params, self.opt_state, self.hyperparameters, self.rates, self.keys, data, jnp.asarray(rows)
        )
        return metrics

    def evaluate(self, batch):
        """The running members' metrics on one batch (stacked by slot)."""
        return self._evaluate(self.params, batch)

    def member_state(self, k: int) -> dict:
        """Member k's {"params", "optimizer"}, as TrainStep.state_dict() gives them."""
        if k in self.left:
            return self.left[k]
        slot = self.slots.index(k)
        return jax.tree_util.tree_map(lambda a: a[slot], {"params": self.params, "optimizer": self.opt_state})

    def load_member_state(self, k: int, state: dict) -> None:
        missing = set(self.params) ^ set(state["params"])
        if missing:
            raise KeyError(f"checkpoint and model disagree on parameters: {sorted(missing)}")
        slot = self.slots.index(k)

        def put(stacked, value):
            return stacked.at[slot].set(jnp.asarray(value, stacked.dtype))

        self.params = {name: put(self.params[name], state["params"][name]) for name in self.params}
        self.opt_state = jax.tree_util.tree_map(put, self.opt_state, state["optimizer"])

    def exploit(self, sources: Mapping[int, int]) -> None:
        """Member `dst` takes on the parameters, optimizer state and traced hyperparameters of
        member `src`, for each {dst: src}: one gather along the member axis, compiled (its
        dropout keys and data order stay its own)."""
        index = np.arange(len(self.slots))
        for dst, src in sources.items():
            index[self.slots.index(dst)] = self.slots.index(src)
        copied = _gather((self.params, self.opt_state, self.hyperparameters, self.rates), jnp.asarray(index))
        self.params, self.opt_state, self.hyperparameters, self.rates = copied

    def set_hyperparameters(self, k: int, values: Mapping[str, float]) -> None:
        """New values of traced hyperparameters for member k ({name: value}; "dropout": every
        dropout rate), used from its next step on."""
        slot = self.slots.index(k)
        for name, value in values.items():
            if name == "dropout":
                dtype = jnp.result_type(float)
                self.rates = {i: r.at[slot].set(traced_rate(value, dtype)) for i, r in self.rates.items()}
                continue
            if name not in self.hyperparameters:
                raise KeyError(f"{name} is not a traced hyperparameter of this population (traced=...)")
            self.hyperparameters[name] = self.hyperparameters[name].at[slot].set(value)
            if f"1-{name}" in self.hyperparameters:
                self.hyperparameters[f"1-{name}"] = self.hyperparameters[f"1-{name}"].at[slot].set(1 - value)

    def member_hyperparameters(self, k: int) -> dict[str, float]:
        """Member k's hyperparameters now ({name: value}; "dropout": its first dropout rate)."""
        slot = self.slots.index(k)
        values = {name: float(value) for name, value in self.shared.items() if not name.startswith("1-")}
        values.update({n: float(v[slot]) for n, v in self.hyperparameters.items() if not n.startswith("1-")})
        if self.rates:
            values["dropout"] = float(self.rates[min(self.rates)][slot])
        return values

    def leave(self, k: int) -> None:
        """Member k stops training: its state is set aside and its row leaves every stack."""
        self.left[k] = self.member_state(k)
        keep = np.asarray([i for i, member in enumerate(self.slots) if member != k], np.int32)
        self.params, self.opt_state, self.keys, self.hyperparameters, self.rates = jax.tree_util.tree_map(
            lambda stacked: stacked[keep], (self.params, self.opt_state, self.keys, self.hyperparameters, self.rates)
        )
        self.slots = [member for member in self.slots if member != k]  # a new list: loops over the old one go on

    def write_back(self, k: int) -> None:
        """Member k's parameters into its own model's cg.Parameters."""
        params = self.member_state(k)["params"]
        for name, p in self.models[k].named_parameters().items():
            p.value = params[name]


@jax.jit
def _gather(stacked, index):
    return jax.tree_util.tree_map(lambda a: a[index], stacked)


class Member:
    """One member of a PopulationTrainer, as its callbacks see it: what a Trainer
    offers them (zkynet.training.TrainingLoop), for this member alone. `status` is
    "RUNNING", then "FINISHED", `stop_status` (should_stop: "STOPPED", or what the one
    who stopped it says, e.g. "KILLED") or "FAILED" (a callback
    raised: `error`)."""

    def __init__(
        self,
        population: PopulationTrainer,
        index: int,
        model,
        seed: int,
        batches: Batches,
        callbacks: Sequence[Callback],
    ):
        self.population, self.index, self.model, self.seed = population, index, model, seed
        self.batches, self.callbacks = batches, list(callbacks)
        self.history: list[Record] = []
        self.step = 0
        self.should_stop = False
        self.stop_status = "STOPPED"
        self.status = "RUNNING"
        self.error: BaseException | None = None

    epochs = property(lambda self: self.population.epochs)
    steps_per_epoch = property(lambda self: self.population.steps_per_epoch)
    epoch = property(lambda self: self.step // self.steps_per_epoch, doc="Epochs completed.")

    @property
    def running(self) -> bool:
        return self.status == "RUNNING"

    def state_dict(self) -> dict:
        return {
            **self.population.step.member_state(self.index),
            "meta": {"step": self.step, "epoch": self.epoch, "seed": self.seed},
        }

    def load_state_dict(self, state: dict) -> None:
        """Before fit(): continue this member from `state` (a Trainer's or a Member's)."""
        _check_seed(state, self.seed, "member")
        self.population.step.load_member_state(self.index, state)
        self.step = int(state["optimizer"]["step"])

    def notify(self, hook: str, *args) -> None:
        """Call the member's callbacks; an error fails this member alone."""
        if not self.running and hook != "on_fit_end":
            return
        loop: TrainingLoop = self  # what the callbacks see: this member as a Trainer
        try:
            for callback in self.callbacks:
                getattr(callback, hook)(loop, *args)
        except Exception as e:
            self.end("FAILED", e)

    def end(self, status: str, error: BaseException | None = None) -> None:
        """Stop training this member: its parameters freeze, its model gets them, and
        (unless it failed) its callbacks' on_fit_end runs, as at the end of Trainer.fit."""
        self.status, self.error = status, error
        self.population.step.leave(self.index)
        self.population.step.write_back(self.index)
        if status != "FAILED":
            self.notify("on_fit_end")
        if self.population.on_member_end is not None and self.status == status:  # (a failing on_fit_end told it)
            self.population.on_member_end(self)


class PopulationTrainer:
    """Trains `models` (one architecture) with `optimizers` on `dataset`, member k with
    data order `seeds[k]` (as Trainer's seed) and `callbacks[k]`: all members in one
    compiled step, each with a history of Trainer's records (train_*, val_*,
    samples_per_second: this member's, compile_seconds: the population's).

    `members[k]` is what member k's callbacks receive as `trainer`, so those written
    for Trainer (checkpoints, NaN guard, trackers, schedulers) watch one member
    each. Setting `should_stop` stops that member after the epoch; a callback that
    raises an Exception fails it (`member.error`); the others train on.
    `on_member_end(member)` is told when a member ends, whatever its status;
    `on_epoch_end(population, epoch, records)` after each epoch, with the records of
    the members that trained it ({index: record}), before the members whose
    should_stop is set end: where a scheduler compares members (a rung rule).
    `precision` is Trainer's, for every member; `traced` PopulationStep's (what
    population-based training, zkynet.training.pbt, may change)."""

    def __init__(
        self,
        models: Sequence[cg.Module],
        loss: Callable,
        optimizers: Sequence[Optimizer],
        dataset: Dataset,
        epochs: int,
        batch_size: int,
        metrics: Callable | None = None,
        seeds: Sequence[int] | None = None,
        eval_batch_size: int | None = None,
        drop_last: bool = True,
        jit: bool = True,
        callbacks: Sequence[Sequence[Callback]] | None = None,
        on_member_end: Callable[[Member], None] | None = None,
        on_epoch_end: Callable[[PopulationTrainer, int, dict], None] | None = None,
        precision: str = "float32",
        traced: Collection[str] = (),
    ):
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        _check_finite(dataset)
        seeds = list(range(len(models))) if seeds is None else list(seeds)
        callbacks = [[] for _ in models] if callbacks is None else callbacks
        if not len(seeds) == len(callbacks) == len(models):
            raise ValueError(
                f"one seed and one list of callbacks per model: {len(models)} models, "
                f"{len(seeds)} seeds, {len(callbacks)} callback lists"
            )
        self.epochs, self.on_member_end, self.on_epoch_end = epochs, on_member_end, on_epoch_end
        self.step = PopulationStep(models, loss, optimizers, metrics, seeds, jit, precision, traced)
        self.data = tuple(jnp.asarray(a) for a in (dataset.train.inputs, dataset.train.targets))
        self.members = [
            Member(
                self,
                k,
                model,
                seed,
                Batches(dataset.train, batch_size, shuffle=True, seed=seed, drop_last=drop_last),
                callbacks[k],
            )
            for k, (model, seed) in enumerate(zip(models, seeds, strict=True))
        ]
        self.eval_batches = Batches(dataset.validation, eval_batch_size or batch_size, shuffle=False)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.members[0].batches)

    def fit(self) -> list[list[Record]]:
        """Train every running member for its remaining epochs; they must stand at the
        same step (a new population, or members restored from one checkpoint step)."""
        running = [m for m in self.members if m.running]
        steps = {m.step for m in running}
        if len(steps) > 1:
            raise ValueError(f"the members stand at different steps {sorted(steps)}: a population trains in step")
        start_epoch, start_batch = divmod(steps.pop() if steps else 0, self.steps_per_epoch)
        with _CompileClock() as clock:
            for member in running:
                member.notify("on_fit_start")
            for epoch in range(start_epoch, self.epochs):
                if not any(m.running for m in self.members):
                    break
                self._train_epoch(epoch, start_batch if epoch == start_epoch else 0, clock)
            for member in self.members:
                if member.running:
                    member.end("FINISHED")
        return [m.history for m in self.members]

    def _train_epoch(self, epoch, start_batch, clock):
        members = [m for m in self.members if m.running]
        for member in members:
            member.notify("on_epoch_start", epoch)
        batch_size = self.members[0].batches.batch_size
        orders = np.stack([m.batches.order(epoch) for m in self.members], axis=1).astype(np.int32)  # (examples, K)
        steps, started = [], time.perf_counter()
        for index in range(start_batch, self.steps_per_epoch):
            slots = self.step.slots
            if not slots:
                break
            metrics = self.step(self.data, orders[index * batch_size : (index + 1) * batch_size, slots].T)
            steps.append((slots, metrics))  # device arrays: no wait for the step to finish
            metrics = _StepMetrics(metrics)
            for slot, k in enumerate(slots):
                member = self.members[k]
                if member.running:
                    member.step += 1
                    member.notify("on_step", _MemberMetrics(metrics, slot))
        means = _step_means(steps)
        seconds = time.perf_counter() - started
        validation = self.evaluate()
        records = {}
        for member in members:
            if not member.running:
                continue
            k = member.index
            records[k] = {
                "epoch": epoch + 1,
                **{f"train_{n}": v for n, v in means[k].items()},
                **{f"val_{n}": float(v[k]) for n, v in validation.items()},
                "samples_per_second": len(steps) * batch_size / seconds,
                "compile_seconds": clock.seconds,
            }
            member.history.append(records[k])
            member.notify("on_epoch_end", epoch, records[k])
        if self.on_epoch_end is not None:
            self.on_epoch_end(self, epoch, {k: r for k, r in records.items() if self.members[k].running})
        for member in members:
            if member.running and member.should_stop:
                member.end(member.stop_status)

    def evaluate(self, batches: Batches | None = None) -> dict[str, np.ndarray]:
        """The running members' metrics on the validation split (or `batches`), averaged
        over examples: {name: array of one value per member, NaN for those that left}."""
        totals: dict[str, Any] = {}
        seen = 0
        for batch in (batches or self.eval_batches).epoch():
            size = len(batch[0])
            for name, value in self.step.evaluate(batch).items():
                totals[name] = totals.get(name, 0.0) + value * size
            seen += size
        slots = self.step.slots
        values = {}
        for name, total in totals.items():
            values[name] = np.full(len(self.members), np.nan)
            values[name][slots] = np.asarray(total).astype(float) / seen
        return values


def _step_means(steps):
    """{member index: {name: its mean over the steps it took}} from [(slots, stacked metrics), ...],
    averaged as Trainer averages its steps (np.mean of the float32 values)."""
    columns: dict[int, dict[str, list]] = {}
    for slots, group in itertools.groupby(steps, key=lambda step: step[0]):
        metrics = [m for _, m in group]
        stacked = {name: np.asarray(jnp.stack([m[name] for m in metrics])) for name in metrics[0]}
        for slot, k in enumerate(slots):
            for name, values in stacked.items():
                columns.setdefault(k, {}).setdefault(name, []).append(values[:, slot])
    return {
        k: {name: float(np.mean(np.concatenate(parts))) for name, parts in named.items()}
        for k, named in columns.items()
    }


class _StepMetrics:
    """A step's metrics, stacked by slot, split into each slot's own device scalars by one
    call the first time a member's callback reads one (most steps nobody does; slicing
    them one by one would dispatch a call per member and metric)."""

    def __init__(self, stacked):
        self.stacked, self._split = stacked, None

    def of(self, slot):
        if self._split is None:
            self._split = _split(self.stacked)
        return self._split[slot]


@jax.jit
def _split(stacked):
    return [
        dict(zip(stacked, values, strict=True)) for values in zip(*(list(v) for v in stacked.values()), strict=True)
    ]


class _MemberMetrics(Mapping):
    """One member's view of a step's metrics, as Trainer's callbacks get them ({name: device
    scalar})."""

    def __init__(self, step_metrics, slot):
        self.step_metrics, self.slot = step_metrics, slot

    def __getitem__(self, name):
        return self.step_metrics.of(self.slot)[name]

    def __iter__(self):
        return iter(self.step_metrics.stacked)

    def __len__(self):
        return len(self.step_metrics.stacked)
