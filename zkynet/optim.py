"""Optimizers: pure updates of parameter pytrees ({name: array}) by gradients.

`state = opt.init(params)`, then `params, state = opt.update(grads, state, params)`:
no hidden mutation, so an update traces into the same XLA program as the
forward and backward pass, and the state (a pytree of arrays with the step
count) saves and restores exactly. Learning rates are numbers or schedules
(functions of the step, traceable).

An optimizer's numbers (peak learning rate, betas, momentum, weight decay, eps)
are its `hyperparameters()`; `update(..., hyperparameters=h)` reads them from `h`
instead, so they may be traced values: how a Population (zkynet.training.population)
trains members with their own values in one compiled program. What is not a
hyperparameter (the type, clipping, the schedule's shape, whether SGD has
momentum) is the optimizer's `signature()`: members must share it.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp

tree_map = jax.tree_util.tree_map


# ----------------------------------------------------------------------------- schedules


class Schedule:
    """A learning rate as a function of the step, around a peak `lr`; `at(step, lr)` is
    the same schedule around another (maybe traced) peak."""

    lr: Any

    def __call__(self, step):
        return self.at(step, self.lr)

    def at(self, step, lr):
        raise NotImplementedError


class Constant(Schedule):
    def __init__(self, lr):
        _positive("lr", lr)
        self.lr = lr

    def at(self, step, lr):
        return jnp.asarray(lr)


class StepDecay(Schedule):
    """lr * gamma ** (step // every)."""

    def __init__(self, lr, every, gamma=0.1):
        _positive("lr", lr)
        _positive_int("StepDecay every", every)
        _check("StepDecay gamma", gamma, "a decay factor in (0, 1]", lambda v: 0 < v <= 1)
        self.lr, self.every, self.gamma = lr, every, gamma

    def at(self, step, lr):
        return lr * self.gamma ** jnp.floor_divide(step, self.every).astype(float)


class Cosine(Schedule):
    """From lr down to final_lr over total_steps along half a cosine, then flat."""

    def __init__(self, lr, total_steps, final_lr=0.0):
        _positive("lr", lr)
        _positive_int("Cosine total_steps", total_steps)
        _check(
            "Cosine final_lr", final_lr, "a number in [0, lr]", lambda v: v >= 0 and (hasattr(lr, "shape") or v <= lr)
        )
        self.lr, self.total_steps, self.final_lr = lr, total_steps, final_lr

    def at(self, step, lr):
        progress = jnp.minimum(step / self.total_steps, 1.0)
        return self.final_lr + 0.5 * (lr - self.final_lr) * (1 + jnp.cos(math.pi * progress))


class Warmup(Schedule):
    """Linear warmup from 0 over `steps`, then `schedule` (a schedule or a number),
    counted from the end of the warmup."""

    def __init__(self, schedule, steps):
        _positive_int("Warmup steps", steps)
        self.schedule, self.steps = as_schedule(schedule), steps
        self.lr = self.schedule.lr

    def at(self, step, lr):
        after = self.schedule.at(jnp.maximum(step - self.steps, 0), lr)
        return jnp.where(step < self.steps, self.schedule.at(0, lr) * (step + 1) / self.steps, after)


class _Given(Schedule):
    """A plain function of the step: it has no peak to vary."""

    lr = None

    def __init__(self, function):
        self.function = function

    def at(self, step, lr):
        return self.function(step)


def as_schedule(lr):
    if not callable(lr):
        _positive("lr", lr)
    return lr if isinstance(lr, Schedule) else _Given(lr) if callable(lr) else Constant(lr)


def _check(name, value, rule, holds):
    """Refuse a hyperparameter outside its range (b1=1.5 trains without an error and
    learns nothing). Arrays are left alone: they are a population's traced values."""
    if hasattr(value, "shape"):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not holds(value):
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _positive(name, value):
    _check(name, value, "a positive number", lambda v: v > 0)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (a number of steps), got {value!r}")


def _fraction(name, value):
    _check(name, value, "in [0, 1)", lambda v: 0 <= v < 1)


def _non_negative(name, value):
    _check(name, value, "a number >= 0", lambda v: v >= 0)


# ----------------------------------------------------------------------------- optimizers


def global_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


def clip_by_global_norm(grads, max_norm):
    """Scale all gradients together so that their global L2 norm is at most max_norm."""
    scale = jnp.minimum(1.0, max_norm / (global_norm(grads) + 1e-6))
    return tree_map(lambda g: g * scale, grads)


def _is_zero(value):
    """A Python zero (a traced value may be anything: the update then applies it)."""
    return isinstance(value, (int, float)) and value == 0


class Optimizer:
    """Shared parts: step count, learning-rate schedule, gradient clipping."""

    hyperparameter_names: tuple = ()  # besides the learning rate's peak ("lr")

    def __init__(self, lr, clip_norm=None):
        self.lr = as_schedule(lr)
        if clip_norm is not None:
            _check("clip_norm", clip_norm, "a positive number or None", lambda v: v > 0)
        self.clip_norm = clip_norm

    def hyperparameters(self):
        """{name: number} of what an update reads: "lr" (the schedule's peak, unless the
        schedule is a plain function) and the optimizer's own (betas, decay, ...)."""
        own = {name: getattr(self, name) for name in self.hyperparameter_names}
        return own if self.lr.lr is None else {"lr": self.lr.lr, **own}

    def signature(self):
        """Everything but the hyperparameters, comparable with ==: optimizers with equal
        signatures run the same update code, whatever their hyperparameters."""
        return (
            type(self).__name__,
            _settings(self, exclude=("lr", *self.hyperparameter_names)),
            _settings(self.lr, exclude=("lr",)),
        )

    def init(self, params):
        return {"step": jnp.zeros((), jnp.int32), **self._init_slots(params)}

    def update(self, grads, state, params, hyperparameters=None):
        """(new params, new state) after one step with `grads` (same structure as params),
        with `hyperparameters` ({name: value}, maybe traced) instead of this optimizer's own."""
        h = self.hyperparameters() if hyperparameters is None else hyperparameters
        if self.clip_norm is not None:
            grads = clip_by_global_norm(grads, self.clip_norm)
        step = state["step"]
        lr = self.lr.at(step, h["lr"]) if "lr" in h else self.lr(step)
        params, slots = self._apply(grads, state, params, lr, step + 1, h)
        return params, {"step": step + 1, **slots}

    def _init_slots(self, params):
        return {}

    def _apply(self, grads, state, params, lr, step, h):
        raise NotImplementedError


def _settings(thing, exclude):
    """An object's settings, nested schedules described the same way."""
    return tuple(
        sorted(
            (k, _settings(v, ("lr",)) if isinstance(v, Schedule) else v)
            for k, v in vars(thing).items()
            if k not in exclude
        )
    )


class SGD(Optimizer):
    """Gradient descent, optionally with (Nesterov) momentum and L2 weight decay,
    with PyTorch's conventions: v = momentum * v + g; p -= lr * v."""

    hyperparameter_names = ("momentum", "weight_decay")

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0, clip_norm=None):
        super().__init__(lr, clip_norm)
        _fraction("momentum", momentum)
        _non_negative("weight_decay", weight_decay)
        if nesterov and not momentum:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def signature(self):
        return super().signature() + (bool(self.momentum),)  # momentum 0 has no velocity slot: other code

    def _init_slots(self, params):
        return {"velocity": tree_map(jnp.zeros_like, params)} if self.momentum else {}

    def _apply(self, grads, state, params, lr, step, h):
        momentum, decay = h["momentum"], h["weight_decay"]
        if not _is_zero(decay):
            grads = tree_map(lambda g, p: g + decay * p, grads, params)
        if not self.momentum:
            return tree_map(lambda p, g: p - lr * g, params, grads), {}
        velocity = tree_map(lambda v, g: momentum * v + g, state["velocity"], grads)
        direction = tree_map(lambda v, g: g + momentum * v, velocity, grads) if self.nesterov else velocity
        return tree_map(lambda p, d: p - lr * d, params, direction), {"velocity": velocity}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight_decay is the coupled L2 kind
    (added to the gradient), as in PyTorch's Adam. Use AdamW for decoupled decay."""

    hyperparameter_names = ("b1", "b2", "eps", "weight_decay")
    decoupled = False  # AdamW: weight decay acts on the parameters, not through the gradient

    def __init__(self, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip_norm=None):
        super().__init__(lr, clip_norm)
        _fraction("b1", b1)
        _fraction("b2", b2)
        _check("eps", eps, "a positive number", lambda v: v > 0)
        _non_negative("weight_decay", weight_decay)
        self.b1, self.b2, self.eps, self.weight_decay = b1, b2, eps, weight_decay

    def hyperparameters(self):
        """Also 1 - b1 and 1 - b2, derived here in double precision: from a float32 b2 = 0.999,
        1 - b2 would be 1.3e-5 off, and a traced b2 is float32."""
        return {**super().hyperparameters(), "1-b1": 1 - self.b1, "1-b2": 1 - self.b2}

    def _init_slots(self, params):
        return {"m": tree_map(jnp.zeros_like, params), "v": tree_map(jnp.zeros_like, params)}

    def _apply(self, grads, state, params, lr, step, h):
        b1, b2, eps, decay = h["b1"], h["b2"], h["eps"], h["weight_decay"]
        if not self.decoupled and not _is_zero(decay):
            grads = tree_map(lambda g, p: g + decay * p, grads, params)
        m = tree_map(lambda m, g: b1 * m + h["1-b1"] * g, state["m"], grads)
        v = tree_map(lambda v, g: b2 * v + h["1-b2"] * g * g, state["v"], grads)
        t = step.astype(float)  # the default float dtype: float64 under jax_enable_x64
        m_scale, v_scale = 1 / (1 - b1**t), 1 / (1 - b2**t)

        def direction(p, m, v):
            adam = m * m_scale / (jnp.sqrt(v * v_scale) + eps)
            return adam + decay * p if self.decoupled else adam

        return tree_map(lambda p, m, v: p - lr * direction(p, m, v), params, m, v), {"m": m, "v": v}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter):
    p -= lr * (adam_direction + weight_decay * p)."""

    decoupled = True

    def __init__(self, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, clip_norm=None):
        super().__init__(lr, b1, b2, eps, weight_decay, clip_norm)
