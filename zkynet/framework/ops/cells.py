"""Recurrent cells' state updates as one operator each (what cuDNN and oneDNN fuse)."""

import jax.numpy as jnp
from jax import lax

from zkynet.framework import xp
from zkynet.framework.builder import NodeLike
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Fused

__all__ = ["LSTMUpdate", "lstm_update"]


class LSTMUpdate(Fused):
    """An LSTM's new state from its gate pre-activations `gates` (..., 4H: input,
    forget, cell, output) and its cell state `c` (..., H): with i, f, o sigmoids and
    g a tanh of the four blocks, c' = f c + i g and h' = o tanh(c'). The output is
    the new state concatenated, [h', c'] (..., 2H), as op.scan carries it.

    One node instead of the thirteen of four slices, three sigmoids, two tanhs, three
    products and a sum, for its backward rule: the gates' cotangent is built as one
    (..., 4H) array, where the slices' rules would add four zero-padded ones, and the
    rule reads only `gates` and `c` (a loop keeps one array per step, not six),
    recomputing the nonlinearities instead of storing them.

    The nonlinearities run as one tanh over the whole width (sigmoid(x) = (1 +
    tanh(x/2)) / 2, exact but for float rounding: an absolute error ~1e-7),
    materialized before anything reads a block of them: XLA's CPU backend compiles a
    loop step's fusion that reads several slices of one array element by element,
    without vector instructions (about 2x slower per LSTM step than this layout, measured).

    Written with xp, so the rule also runs on nodes (derivatives of derivatives; the
    barrier is then left out: it is a scheduling hint, not arithmetic)."""

    vjp_uses_out = False
    input_names = ("gates", "c")

    def __init__(self):
        super().__init__(name="lstm_update")  # snake_case would run "LSTMUpdate" together

    def call(self, gates, c):
        active, c_new = _update(gates.value, c.value)
        return xp.concatenate([xp.split(active, 4, axis=-1)[3] * xp.tanh(c_new), c_new], axis=-1)

    def vjp(self, grad, out, gates, c):
        active, c_new = _update(gates.value, c.value)
        i, f, g, o = xp.split(active, 4, axis=-1)
        tanh_c = xp.tanh(c_new)
        d_h, d_c_new = xp.split(grad, 2, axis=-1)
        d_c = d_c_new + d_h * o * (1 - tanh_c * tanh_c)
        d_active = xp.concatenate([d_c * g, d_c * c.value, d_c * i, d_h * tanh_c], axis=-1)
        slope = xp.where(_is_cell_block(active), 1 - active * active, active * (1 - active))
        return d_active * slope, d_c * f


def _is_cell_block(gates):
    """True over the third of the four gate blocks (g, the tanh one), False elsewhere."""
    block = lax.broadcasted_iota(jnp.int32, gates.shape, gates.ndim - 1) // (gates.shape[-1] // 4)
    return block == 2


def _activations(gates):
    """sigmoid over the i, f, o blocks and tanh over g, as one tanh over the whole width."""
    half = jnp.where(_is_cell_block(gates), 1, 0.5).astype(gates.dtype)
    return xp.optimization_barrier(xp.tanh(gates * half) * half + (1 - half))


def _update(gates, c):
    """(the four gates' activations, whole width; the new cell state f c + i g)."""
    active = _activations(gates)
    i, f, g, _ = xp.split(active, 4, axis=-1)
    return active, f * c + i * g


def lstm_update(gates: NodeLike, c: NodeLike) -> Node:
    """[h', c'] (..., 2H) from gate pre-activations (..., 4H) and cell state c (..., H); see LSTMUpdate."""
    return LSTMUpdate()(gates, c)
