"""Parameter initializers: functions of an explicit PRNG key and a shape, so the
same seed always gives the same model.

Fans follow the layouts zkynet's layers use: dense weights are (in, out),
convolution kernels (out_channels, in_channels, kh, kw).
"""

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


def key_of(seed_or_key):
    """A PRNG key from a non-negative int seed (the key itself, or None: no randomness)."""
    if seed_or_key is None:
        return None
    if isinstance(seed_or_key, numbers.Integral) and not isinstance(seed_or_key, bool):
        if seed_or_key < 0:
            raise ValueError(f"a seed must be a non-negative int, got {seed_or_key}")
        return jax.random.PRNGKey(int(seed_or_key))
    if not hasattr(seed_or_key, "dtype") or (isinstance(seed_or_key, np.ndarray) and seed_or_key.ndim == 0):
        raise TypeError(f"a seed must be a non-negative int (or a PRNG key), got {seed_or_key!r:.60}")
    return seed_or_key


def _shape(shape):
    """`shape` as a tuple, refused when a size is not positive (jax would fail deep in
    XLA with 'invalid tensor dimension size', naming no layer)."""
    shape = tuple(shape)
    if any(int(size) < 1 for size in shape):
        raise ValueError(f"cannot make a parameter of shape {shape}: every size must be at least 1")
    return shape


def fans(shape):
    """(fan_in, fan_out) of a dense (in, out) or convolution (out, in, *kernel) weight."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight of rank >= 2, got shape {tuple(shape)}")
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def normal(key, shape, stddev=0.01, dtype=jnp.float32):
    return stddev * jax.random.normal(key_of(key), _shape(shape), dtype)


def uniform(key, shape, limit, dtype=jnp.float32):
    return jax.random.uniform(key_of(key), _shape(shape), dtype, -limit, limit)


def glorot_uniform(key, shape, dtype=jnp.float32):
    """Glorot/Xavier: variance 2 / (fan_in + fan_out); for tanh/sigmoid layers."""
    fan_in, fan_out = fans(shape)
    return uniform(key, shape, math.sqrt(6 / (fan_in + fan_out)), dtype)


def glorot_normal(key, shape, dtype=jnp.float32):
    fan_in, fan_out = fans(shape)
    return normal(key, shape, math.sqrt(2 / (fan_in + fan_out)), dtype)


def he_normal(key, shape, dtype=jnp.float32):
    """He/Kaiming: variance 2 / fan_in; for ReLU layers."""
    return normal(key, shape, math.sqrt(2 / fans(shape)[0]), dtype)


def he_uniform(key, shape, dtype=jnp.float32):
    return uniform(key, shape, math.sqrt(6 / fans(shape)[0]), dtype)


def zeros(key, shape, dtype=jnp.float32):
    return jnp.zeros(_shape(shape), dtype)


def ones(key, shape, dtype=jnp.float32):
    return jnp.ones(_shape(shape), dtype)


INITIALIZERS = {f.__name__: f for f in (glorot_uniform, glorot_normal, he_normal, he_uniform, zeros, ones)}


def get(name_or_fn):
    """An initializer by name ("he_normal", ...) or the function itself."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        return INITIALIZERS[name_or_fn]
    except KeyError:
        raise ValueError(f"unknown initializer {name_or_fn!r}; choose one of {', '.join(INITIALIZERS)}") from None
