"""Generic building blocks: a chain of layers, activations, dropout, flatten,
token embeddings, layer normalization."""

import jax
import jax.numpy as jnp

from zkynet import init
from zkynet.framework import cg, op

ACTIVATIONS = {
    "relu": op.relu,
    "tanh": op.tanh,
    "sigmoid": op.sigmoid,
    "gelu": op.gelu,
    "leaky_relu": op.leaky_relu,
    "identity": lambda x: x,
}


def activation(name):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


class Sequential(cg.Module):
    """Applies `layers` one after another."""

    def __init__(self, layers):
        super().__init__(inputs=(cg.Variable("x"),))
        self.layers = list(layers)

    def call(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Activation(cg.Module):
    def __init__(self, name):
        super().__init__(inputs=(cg.Variable("x"),), name=name)
        self.fn = activation(name)

    def call(self, x):
        return self.fn(x)


class Dropout(cg.Module):
    """Zeroes each element with probability `rate` when the call was given an `rng`
    (training); the identity otherwise (evaluation). `rate` may be set to a traced
    value while a step is traced (a Population's members each have their own)."""

    def __init__(self, rate):
        super().__init__(inputs=(cg.Variable("x"),))
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate

    def call(self, x):
        key = cg.rng_key()
        return x if key is None or _is_zero(self.rate) else op.dropout(x, key, self.rate)


def _is_zero(rate):
    return not isinstance(rate, jax.core.Tracer) and rate == 0


class Flatten(cg.Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"),))

    def call(self, x):
        return op.reshape(x, (x.shape[0], -1))


class Embedding(cg.Module):
    """Token ids (any shape) -> vectors: rows of a (vocabulary, dim) table."""

    def __init__(self, vocabulary, dim, key=0):
        super().__init__(
            inputs=(cg.Variable("tokens"),),
            params=(cg.Parameter("E", init.normal(key, (vocabulary, dim), stddev=dim**-0.5)),),
        )

    def call(self, tokens):
        return op.take(self.param("E"), tokens, axis=0)


class LayerNorm(cg.Module):
    """Normalize the last axis to zero mean and unit variance, then scale and shift."""

    def __init__(self, dim, eps=1e-5):
        super().__init__(
            inputs=(cg.Variable("x"),),
            params=(cg.Parameter("scale", jnp.ones(dim)), cg.Parameter("shift", jnp.zeros(dim))),
        )
        self.eps = eps

    def call(self, x):
        return op.layer_norm(x, self.eps) * self.param("scale") + self.param("shift")
