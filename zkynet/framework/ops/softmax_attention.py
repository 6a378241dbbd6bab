"""Attention as one operator: softmax(q k^T * scale, masked) v."""

import jax.numpy as jnp

from zkynet.framework.builder import NodeLike
from zkynet.framework.graph import Node
from zkynet.framework.operator import Operator
from zkynet.framework.ops.reductions import _log_normalizer

__all__ = ["Attention", "attention", "MASKED"]

MASKED = -1e9  # the score of a masked pair: softmax turns it into 0 (finite: fully masked rows stay NaN-free)


class Attention(Operator):
    """softmax(q k^T * scale, where `mask` is False: MASKED) v over the last two axes
    of q, k, v (..., T, d); `mask` (optional, boolean) broadcasts against the scores.

    One node instead of the six of matmul, transpose, scale, where, softmax and
    matmul, for its backward rule: with P the probabilities and O the output,
    dS = P (dP - rowsum(dO O)) uses a rowsum over d (FlashAttention's identity)
    instead of softmax's over T x T, and the scaling and masking cost no passes of
    their own. The forward keeps P (what the rule reads, besides q, k, v)."""

    variadic = True

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, q, k, v, mask=None):
        scores = jnp.matmul(q.value, jnp.swapaxes(k.value, -1, -2)) * self.scale
        if mask is not None:
            scores = jnp.where(mask.value, scores, MASKED)
        _, shifted, log_total = _log_normalizer(scores, -1)
        probabilities = jnp.exp(shifted - log_total)
        return jnp.matmul(probabilities, v.value), probabilities

    def vjp(self, g, out, q, k, v, mask=None, saved=None):
        p = saved
        d_v = jnp.matmul(jnp.swapaxes(p, -1, -2), g)
        d_scores = p * (jnp.matmul(g, jnp.swapaxes(v.value, -1, -2)) - jnp.sum(g * out, axis=-1, keepdims=True))
        if mask is not None:  # a fully masked row has uniform p, but its scores were constants
            d_scores = jnp.where(mask.value, d_scores, 0)
        d_scores = d_scores * self.scale
        d_q = jnp.matmul(d_scores, k.value)
        d_k = jnp.matmul(jnp.swapaxes(d_scores, -1, -2), q.value)
        return (d_q, d_k, d_v) + ((None,) if mask is not None else ())


def attention(q: NodeLike, k: NodeLike, v: NodeLike, mask: NodeLike | None = None, scale: float = 1.0) -> Node:
    """softmax(q k^T * scale, masked where `mask` is False) v; see Attention."""
    return Attention(scale)(q, k, v) if mask is None else Attention(scale)(q, k, v, mask)
