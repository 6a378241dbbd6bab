"""Steps of random graphs for the derivative-of-derivative tests, written once for
both sides: `L` is `Z` (zkynet's operators, on nodes) or `J` (jnp, the reference).

Every step maps (x, y, z) shaped (3, 4), (4,), (3, 1) to a new x shaped (3, 4), so
steps chain in any order; y and z broadcast against x. `smooth` steps have second
derivatives everywhere (finite differences apply); the others have kinks (abs, relu,
max, where, maximum) where random inputs almost surely never land.
"""

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework import op

MASK = np.array([[True, False, True, False], [False, False, True, True], [True, True, False, False]])
ROWS = np.array([2, 0, 0])  # repeated indices: their cotangents add up
COLUMNS = np.array([1, 3, 3, 0])
FLAT = np.array([[0, 5, 11, 5], [7, 7, 2, 3], [1, 0, 9, 4]])
_rng = np.random.default_rng(7)
W = _rng.normal(size=(4, 4)).astype(np.float32) / 2
W_BATCH = _rng.normal(size=(2, 4, 4)).astype(np.float32) / 2
C26 = _rng.normal(size=(2, 6)).astype(np.float32)
C3 = _rng.normal(size=(3, 1, 1)).astype(np.float32)
READOUT = _rng.normal(size=(3, 4)).astype(np.float32)


class Z:
    """zkynet's side."""

    tanh, sigmoid, exp, log, sqrt, square, abs = op.tanh, op.sigmoid, op.exp, op.log, op.sqrt, op.square, op.abs
    softplus, relu, leaky_relu, gelu = op.softplus, op.relu, op.leaky_relu, op.gelu
    maximum, minimum, where = op.maximum, op.minimum, op.where
    sum, mean, max, logsumexp = op.sum, op.mean, op.max, op.logsumexp
    softmax, log_softmax, layer_norm = op.softmax, op.log_softmax, op.layer_norm
    matmul, reshape, transpose, broadcast_to = op.matmul, op.reshape, op.transpose, op.broadcast_to
    concat, stack, pad, take, scatter_add = op.concat, op.stack, op.pad, op.take, op.scatter_add


def _layer_norm(x, eps=1e-5):
    centered = x - jnp.mean(x, axis=-1, keepdims=True)
    return centered / jnp.sqrt(jnp.mean(centered * centered, axis=-1, keepdims=True) + eps)


def _scatter_add(x, indices, updates, axis=0):
    return jnp.asarray(x).at[(slice(None),) * axis + (indices,)].add(updates)


class J:
    """The jnp reference."""

    tanh, sigmoid, exp, log, sqrt, square, abs = (
        jnp.tanh,
        jax.nn.sigmoid,
        jnp.exp,
        jnp.log,
        jnp.sqrt,
        jnp.square,
        jnp.abs,
    )
    softplus, relu, leaky_relu, gelu = jax.nn.softplus, jax.nn.relu, jax.nn.leaky_relu, jax.nn.gelu
    maximum, minimum, where = jnp.maximum, jnp.minimum, jnp.where
    sum, mean, max, logsumexp = jnp.sum, jnp.mean, jnp.max, jax.nn.logsumexp
    softmax, log_softmax, layer_norm = jax.nn.softmax, jax.nn.log_softmax, _layer_norm
    matmul, reshape, transpose, broadcast_to = jnp.matmul, jnp.reshape, jnp.transpose, jnp.broadcast_to
    concat, stack, pad, scatter_add = jnp.concatenate, jnp.stack, jnp.pad, _scatter_add

    @staticmethod
    def take(x, indices, axis=0):
        return jnp.take(x, indices, axis=axis)


def _gelu_exact(L, x, y, z):
    return L.gelu(x, approximate=False) * y if L is J else L.gelu(x) * y


SMOOTH = {
    # elementwise, broadcasting y (4,) and z (3, 1) against x (3, 4)
    "tanh_sigmoid": lambda L, x, y, z: L.tanh(x) + L.sigmoid(x) * y,
    "exp_sub": lambda L, x, y, z: L.exp(0.3 * x) - z * x,
    "log_softplus": lambda L, x, y, z: L.log(L.softplus(x) + 0.5) * z,
    "sqrt_square_div": lambda L, x, y, z: L.sqrt(x * x + 1) + L.square(x) / (1 + L.square(y)),
    "pow_both": lambda L, x, y, z: (L.softplus(x) + 0.5) ** (0.5 + 0.3 * L.tanh(z)),
    "pow_int": lambda L, x, y, z: x**3 / 4 - y**2 * x,
    "rpow": lambda L, x, y, z: 1.5 ** L.tanh(x + y),
    "gelu": _gelu_exact,
    "gelu_tanh": lambda L, x, y, z: L.gelu(x + z, approximate=True),
    "neg_sub": lambda L, x, y, z: -(x * y) - (z - x),
    # reductions and normalizations
    "softmax_last": lambda L, x, y, z: L.softmax(x * y, axis=-1) * 3,
    "softmax_first": lambda L, x, y, z: L.softmax(x + z, axis=0) * x,
    "log_softmax": lambda L, x, y, z: L.log_softmax(x * y, axis=0),
    "logsumexp": lambda L, x, y, z: x - L.logsumexp(x * z, axis=1, keepdims=True),
    "logsumexp_all": lambda L, x, y, z: x * L.logsumexp(x),
    "layer_norm": lambda L, x, y, z: L.layer_norm(x * z) * y,
    "sum_mean": lambda L, x, y, z: x * L.sum(x * x, axis=0) / 4 + L.mean(x, axis=1, keepdims=True) * z,
    # linear algebra: matrices, vectors, batches broadcast
    "matmul": lambda L, x, y, z: L.tanh(x @ (W * y)),
    "matvec": lambda L, x, y, z: L.reshape(x @ y, (3, 1)) * x,
    "vecmat": lambda L, x, y, z: L.matmul(L.reshape(z, (3,)), x) * x,
    "matmul_batch": lambda L, x, y, z: L.sum(L.matmul(L.reshape(x, (1, 3, 4)), W_BATCH * y), axis=0),
    "matmul_gram": lambda L, x, y, z: L.matmul(L.matmul(x, L.transpose(x)), x) / 8,
    # shapes
    "reshape": lambda L, x, y, z: L.reshape(L.tanh(L.reshape(x, (2, 6)) * C26), (3, 4)),
    "transpose": lambda L, x, y, z: L.transpose(L.transpose(x) * L.transpose(z) * L.reshape(y, (4, 1))),
    "broadcast_to": lambda L, x, y, z: x * L.broadcast_to(y, (3, 4)) + L.broadcast_to(z * z, (3, 4)),
    "concat": lambda L, x, y, z: L.concat([x[:, :2] * 2, L.tanh(x[:, 2:]) * z], axis=1),
    "stack": lambda L, x, y, z: L.sum(L.stack([x, x * y, z * x], axis=0) * C3, axis=0),
    "pad": lambda L, x, y, z: L.pad(x[1:, 1:3] * y[:2], ((1, 0), (1, 1))) + x * x / 2,
    # indexing
    "getitem_slices": lambda L, x, y, z: x[::-1] * x + x[:, 1:2] * y,
    "getitem_int_none": lambda L, x, y, z: x * x[1] + x[None][0, :, None][..., 0] * z,
    "getitem_bool": lambda L, x, y, z: x + L.sum(x[MASK] ** 2) * y,
    "getitem_int_arrays": lambda L, x, y, z: x[ROWS] * x + x[:, COLUMNS] * y,
    "take": lambda L, x, y, z: L.take(x, COLUMNS, axis=1) * x + L.take(x * y, ROWS, axis=0),
    "take_flat": lambda L, x, y, z: L.take(x * z, FLAT, axis=None) * x,
    "scatter_add": lambda L, x, y, z: L.scatter_add(x * y, np.array([2, 0, 2]), x * x, axis=0),
    "scatter_add_cols": lambda L, x, y, z: L.scatter_add(x, np.array([1, 1]), x[:, :2] * z, axis=1),
}

KINKED = {
    "abs": lambda L, x, y, z: L.abs(x) * y,
    "relu": lambda L, x, y, z: L.relu(x) * x + L.leaky_relu(x * z),
    "maximum_minimum": lambda L, x, y, z: L.maximum(x, y) * x + L.minimum(x, z),
    "where": lambda L, x, y, z: L.where(x > y, x * y, x + z),
    "max": lambda L, x, y, z: x * L.max(x, axis=0, keepdims=True) + L.reshape(L.max(x * z, axis=1), (3, 1)),
}

STEPS = {**SMOOTH, **KINKED}


def program(L, names):
    """f(x, y, z) -> scalar: the steps `names` in order, then a fixed weighted sum."""

    def f(x, y, z):
        for name in names:
            x = STEPS[name](L, x, y, z)
            x = L.tanh(x) * 2  # keeps values moderate, whatever the chain
        return L.sum(x * READOUT) + L.sum(y * y * L.sum(x, axis=0))

    return f


def inputs(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(size=s).astype(dtype) for s in ((3, 4), (4,), (3, 1)))
