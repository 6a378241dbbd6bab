"""Compiled steps a sweep's worker keeps from one trial to the next (in the workers).

A Trainer's step bakes its optimizer's hyperparameters into the program as constants,
so every learning rate of a sweep is a program of its own: traced, lowered and
compiled again (JAX's persistent cache cannot help: the programs differ). A trial's
trainer here takes them as traced arguments instead (weakly typed scalars, which JAX
promotes exactly as the Python numbers they replace: the same numbers to the bit,
tests/experiments/test_sweep.py), and keeps its train and eval programs in the worker
under a key naming everything else the program depends on: a later trial of the same
architecture, data, precision and optimizer code runs them without tracing anything.

Anything the key cannot vouch for (data-parallel devices, an eager step, a learning
rate that is a plain function of the step, a framework whose steps changed) trains
with the Trainer's own steps.
"""

import json
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from omegaconf import DictConfig, OmegaConf

from zkynet.training import Trainer

# what a program does not depend on: how the run is started, tracked, logged, checkpointed, or its seed
# (a traced key); its optimizer's numbers are traced values, and the rest of it is in its signature()
NOT_THE_PROGRAM = ("launch", "output_dir", "run_name", "tracking", "callbacks", "seed", "optimizer")
TRAINER_NOT_THE_PROGRAM = (
    "progress",
    "log_every_n_steps",
    "checkpoint_every_n_epochs",
    "checkpoint_min_seconds",
    "resume",
)


class Programs:
    """The compiled train and eval steps of one worker process, by key."""

    def __init__(self) -> None:
        self.train: dict[str, Callable] = {}
        self.eval: dict[str, Callable] = {}
        self.reused = 0  # trials that traced nothing
        self.keys: dict[tuple[str, ...], str] = {}  # key_of by the overrides that can change it


def _program_overrides(cfg: DictConfig) -> tuple[str, ...]:
    """A trial's overrides less those that only set what key_of leaves out (optimizer.*, seed)."""
    return tuple(o for o in cfg.launch.overrides if not o.lstrip("+~").startswith(("optimizer.", "seed=", "tracking.")))


def key_of(cfg: DictConfig) -> str:
    """The configuration less what does not change the compiled program."""
    settings = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(settings, dict)
    kept = {k: v for k, v in settings.items() if k not in NOT_THE_PROGRAM}
    kept["trainer"] = {k: v for k, v in kept["trainer"].items() if k not in TRAINER_NOT_THE_PROGRAM}
    kept["model"] = {k: v for k, v in kept["model"].items() if k != "key"}  # its initial values' seed
    return json.dumps(kept, sort_keys=True, default=str)


def trainer_maker(programs: Programs, cfg: DictConfig) -> Callable[..., Trainer]:
    """What builds a trial's trainer (experiments.runner.run's make_trainer)."""
    overrides = _program_overrides(cfg)
    base = programs.keys.get(overrides) or programs.keys.setdefault(overrides, key_of(cfg))

    def make(**arguments: Any) -> Trainer:
        trainer = Trainer(**arguments)
        optimizer, step, evaluate = arguments["optimizer"], trainer.train_step, trainer.eval_step
        if not _cacheable(trainer, optimizer):
            return trainer
        given = optimizer.hyperparameters()
        zero = sorted(name for name, value in given.items() if value == 0)  # a zero is other code: kept constant
        traced = {name: jnp.asarray(value) for name, value in given.items() if name not in zero}
        key = json.dumps([base, repr(optimizer.signature()), zero])
        train = programs.train.get(key)
        if train is None:
            train = programs.train[key] = _jitted(step, {name: given[name] for name in zero})
        else:
            programs.reused += 1
        step._step = _given(train, traced)
        evaluate._eval = programs.eval.setdefault(base, evaluate._eval)
        return trainer

    return make


def _given(program: Callable, traced: dict[str, Any]) -> Callable:
    """TrainStep's step function: (params, state, batch, rng), the hyperparameters given."""

    def step(params: Any, state: Any, batch: Any, rng: Any) -> Any:
        return program(params, state, batch, rng, traced)

    return step


def _jitted(step: Any, constants: dict[str, Any]) -> Callable:
    """The step's program with `constants` (the zero hyperparameters) built in, the other
    hyperparameters its last argument."""
    import jax

    def pure(params: Any, state: Any, batch: Any, rng: Any, traced: dict[str, Any]) -> Any:
        return step.pure(params, state, batch, rng, {**traced, **constants})

    return jax.jit(pure, donate_argnums=(0, 1))


def _cacheable(trainer: Trainer, optimizer: Any) -> bool:
    step, evaluate = trainer.train_step, trainer.eval_step
    return (
        step.parallel is None
        and hasattr(step, "_step")
        and hasattr(evaluate, "_eval")
        and hasattr(step._step, "lower")  # jitted: an eager trainer (jit=False) stays eager
        and optimizer.lr.lr is not None  # a peak the step can take as a value, not a plain function
    )
