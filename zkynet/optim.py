"""Optimizers: pure updates of parameter pytrees ({name: array}) by gradients.

`state = opt.init(params)`, then `params, state = opt.update(grads, state, params)`:
no hidden mutation, so an update traces into the same XLA program as the
forward and backward pass, and the state (a pytree of arrays with the step
count) saves and restores exactly. Learning rates are numbers or schedules
(functions of the step, traceable).
"""
import math

import jax
import jax.numpy as jnp

tree_map = jax.tree_util.tree_map


# ----------------------------------------------------------------------------- schedules

class Constant:
    def __init__(self, lr):
        self.lr = lr

    def __call__(self, step):
        return jnp.asarray(self.lr)


class StepDecay:
    """lr * gamma ** (step // every)."""
    def __init__(self, lr, every, gamma=0.1):
        self.lr, self.every, self.gamma = lr, every, gamma

    def __call__(self, step):
        return self.lr * self.gamma ** jnp.floor_divide(step, self.every).astype(float)


class Cosine:
    """From lr down to final_lr over total_steps along half a cosine, then flat."""
    def __init__(self, lr, total_steps, final_lr=0.0):
        self.lr, self.total_steps, self.final_lr = lr, total_steps, final_lr

    def __call__(self, step):
        progress = jnp.minimum(step / self.total_steps, 1.0)
        return self.final_lr + 0.5 * (self.lr - self.final_lr) * (1 + jnp.cos(math.pi * progress))


class Warmup:
    """Linear warmup from 0 over `steps`, then `schedule` (a schedule or a number),
    counted from the end of the warmup."""
    def __init__(self, schedule, steps):
        self.schedule, self.steps = as_schedule(schedule), steps

    def __call__(self, step):
        after = self.schedule(jnp.maximum(step - self.steps, 0))
        return jnp.where(step < self.steps, self.schedule(0) * (step + 1) / self.steps, after)


def as_schedule(lr):
    if not callable(lr):
        _check("lr", lr, "a positive number", lambda v: v > 0)
    return lr if callable(lr) else Constant(lr)


def _check(name, value, rule, holds):
    """Refuse a hyperparameter outside its range (b1=1.5 trains without an error and
    learns nothing). Arrays are left alone: they are a population's traced values."""
    if hasattr(value, "shape"):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not holds(value):
        raise ValueError(f"{name} must be {rule}, got {value!r}")


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


class Optimizer:
    """Shared parts: step count, learning-rate schedule, gradient clipping."""

    def __init__(self, lr, clip_norm=None):
        self.lr = as_schedule(lr)
        if clip_norm is not None:
            _check("clip_norm", clip_norm, "a positive number or None", lambda v: v > 0)
        self.clip_norm = clip_norm

    def init(self, params):
        return {"step": jnp.zeros((), jnp.int32), **self._init_slots(params)}

    def update(self, grads, state, params):
        """(new params, new state) after one step with `grads` (same structure as params)."""
        if self.clip_norm is not None:
            grads = clip_by_global_norm(grads, self.clip_norm)
        step = state["step"]
        params, slots = self._apply(grads, state, params, self.lr(step), step + 1)
        return params, {"step": step + 1, **slots}

    def _init_slots(self, params):
        return {}

    def _apply(self, grads, state, params, lr, step):
        raise NotImplementedError


class SGD(Optimizer):
    """Gradient descent, optionally with (Nesterov) momentum and L2 weight decay,
    with PyTorch's conventions: v = momentum * v + g; p -= lr * v."""

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0, clip_norm=None):
        super().__init__(lr, clip_norm)
        _fraction("momentum", momentum)
        _non_negative("weight_decay", weight_decay)
        if nesterov and not momentum:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def _init_slots(self, params):
        return {"velocity": tree_map(jnp.zeros_like, params)} if self.momentum else {}

    def _apply(self, grads, state, params, lr, step):
        if self.weight_decay:
            grads = tree_map(lambda g, p: g + self.weight_decay * p, grads, params)
        if not self.momentum:
            return tree_map(lambda p, g: p - lr * g, params, grads), {}
        velocity = tree_map(lambda v, g: self.momentum * v + g, state["velocity"], grads)
        direction = tree_map(lambda v, g: g + self.momentum * v, velocity, grads) if self.nesterov else velocity
        return tree_map(lambda p, d: p - lr * d, params, direction), {"velocity": velocity}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight_decay is the coupled L2 kind
    (added to the gradient), as in PyTorch's Adam. Use AdamW for decoupled decay."""

    def __init__(self, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip_norm=None):
        super().__init__(lr, clip_norm)
        _fraction("b1", b1)
        _fraction("b2", b2)
        _check("eps", eps, "a positive number", lambda v: v > 0)
        _non_negative("weight_decay", weight_decay)
        self.b1, self.b2, self.eps, self.weight_decay = b1, b2, eps, weight_decay

    def _init_slots(self, params):
        return {"m": tree_map(jnp.zeros_like, params), "v": tree_map(jnp.zeros_like, params)}

    def _apply(self, grads, state, params, lr, step):
        if self.weight_decay:
            grads = tree_map(lambda g, p: g + self.weight_decay * p, grads, params)
        m = tree_map(lambda m, g: self.b1 * m + (1 - self.b1) * g, state["m"], grads)
        v = tree_map(lambda v, g: self.b2 * v + (1 - self.b2) * g * g, state["v"], grads)
        t = step.astype(float)  # the default float dtype: float64 under jax_enable_x64
        m_scale, v_scale = 1 / (1 - self.b1 ** t), 1 / (1 - self.b2 ** t)
        params = tree_map(lambda p, m, v: p - lr * self._direction(p, m * m_scale, v * v_scale),
                          params, m, v)
        return params, {"m": m, "v": v}

    def _direction(self, p, m_hat, v_hat):
        return m_hat / (jnp.sqrt(v_hat) + self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter):
    p -= lr * (adam_direction + weight_decay * p)."""

    def __init__(self, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, clip_norm=None):
        super().__init__(lr, b1, b2, eps, 0.0, clip_norm)
        _non_negative("weight_decay", weight_decay)
        self.decoupled_decay = weight_decay

    def _direction(self, p, m_hat, v_hat):
        return super()._direction(p, m_hat, v_hat) + self.decoupled_decay * p
