"""Randomness from explicit PRNG keys: dropout."""

import jax
import jax.numpy as jnp

from zkynet.framework import xp
from zkynet.framework.builder import NodeLike
from zkynet.framework.errors import ValueTypeError
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Fused

__all__ = ["Dropout", "dropout"]


class Dropout(Fused):
    """Zero each element with probability `rate`, scale the rest by 1/(1 - rate).
    The mask comes from the PRNG `key` input, so a step is reproducible (and the
    backward pass recomputes the same mask instead of storing it). The rule is g masked
    and scaled: linear in g with a constant mask, so it runs on nodes as it is."""

    check_integer_overflow = False  # selects or moves elements: cannot overflow
    vjp_uses_out = False
    input_names = ("x", "key")

    def __init__(self, rate):
        super().__init__()
        if not isinstance(rate, jax.core.Tracer) and not 0 <= rate < 1:  # a traced rate: see layers.Dropout
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate

    def _keep(self, x, key):
        return jax.random.bernoulli(key.value, 1 - self.rate, x.shape)

    def _kept(self, x, key, values):
        """`values` / (1 - rate) where the mask keeps, else 0. A traced rate (a Population
        member's own) is a float32 array: cast to x's dtype, so that bfloat16 stays bfloat16."""
        return xp.where(self._keep(x, key), values / jnp.asarray(1 - self.rate, x.dtype), 0)

    def check(self, x, key):
        typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        if not typed and (key.dtype != jnp.uint32 or key.shape[-1:] != (2,)):
            raise ValueTypeError(
                f"dropout: key must be a PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)), "
                f"got {key.dtype}{list(key.shape)}"
            )

    def call(self, x, key):
        return self._kept(x, key, x.value)

    def vjp(self, g, out, x, key):
        return self._kept(x, key, g), None


def dropout(x: NodeLike, key: NodeLike, rate: float = 0.5) -> Node:
    return Dropout(rate)(x, key)
