"""Attention as one operator: softmax(q k^T * scale, masked) v."""

from zkynet.framework import xp
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
    their own. The forward keeps P (what the rule reads, besides q, k, v).

    Forward and rule are written with xp: for derivatives of derivatives the graph runs
    `forward` on nodes to rebuild P as a node, then the rule on nodes."""

    variadic = True

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, q, k, v, mask=None):
        scores = xp.matmul(q.value, xp.swapaxes(k.value, -1, -2)) * self.scale
        if mask is not None:
            scores = xp.where(mask.value, scores, MASKED)
        _, shifted, log_total = _log_normalizer(scores, -1)
        probabilities = xp.exp(shifted - log_total)
        return xp.matmul(probabilities, v.value), probabilities

    def vjp(self, g, out, q, k, v, mask=None, saved=None):
        p = saved
        d_v = xp.matmul(xp.swapaxes(p, -1, -2), g)
        d_scores = p * (xp.matmul(g, xp.swapaxes(v.value, -1, -2)) - xp.sum(g * out, axis=-1, keepdims=True))
        if mask is not None:  # a fully masked row has uniform p, but its scores were constants
            d_scores = xp.where(mask.value, d_scores, 0)
        d_scores = d_scores * self.scale
        d_q = xp.matmul(d_scores, k.value)
        d_k = xp.matmul(xp.swapaxes(d_scores, -1, -2), q.value)
        return (d_q, d_k, d_v) + ((None,) if mask is not None else ())


def attention(q: NodeLike, k: NodeLike, v: NodeLike, mask: NodeLike | None = None, scale: float = 1.0) -> Node:
    """softmax(q k^T * scale, masked where `mask` is False) v; see Attention."""
    return Attention(scale)(q, k, v) if mask is None else Attention(scale)(q, k, v, mask)
