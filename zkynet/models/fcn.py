"""Fully connected networks: Linear layers and the multi-layer perceptron."""
import jax
import jax.numpy as jnp

from zkynet import init
from zkynet.framework import cg
from zkynet.models.layers import Activation, Dropout, Sequential

RELU_LIKE = ("relu", "leaky_relu", "gelu")


class Linear(cg.Module):
    """y = x @ W + b, with W shaped (in_features, out_features); x may carry any
    number of leading (batch) dimensions."""

    def __init__(self, in_features, out_features, bias=True, init_fn="glorot_uniform", key=0):
        params = [cg.Parameter("W", init.get(init_fn)(init.key_of(key), (in_features, out_features)))]
        if bias:
            params.append(cg.Parameter("b", jnp.zeros(out_features)))
        super().__init__(inputs=(cg.Variable("x"),), params=params)
        self.bias = bias

    def call(self, x):
        y = x @ self.param("W")
        return y + self.param("b") if self.bias else y


class MLP(Sequential):
    """Linear layers of the given `widths` ([in, hidden..., out]) with an activation
    (and optional dropout) between them; the output is left linear (logits).
    Weights start He-normal for ReLU-like activations, Glorot-uniform otherwise."""

    def __init__(self, widths, activation="relu", dropout=0.0, init_fn=None, key=0):
        if len(widths) < 2:
            raise ValueError(f"an MLP needs at least [in, out] widths, got {widths}")
        init_fn = init_fn or ("he_normal" if activation in RELU_LIKE else "glorot_uniform")
        keys = jax.random.split(init.key_of(key), len(widths) - 1)
        layers = []
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(Linear(n_in, n_out, init_fn=init_fn, key=keys[i]))
            if i < len(widths) - 2:
                layers.append(Activation(activation))
                if dropout:
                    layers.append(Dropout(dropout))
        super().__init__(layers)
        self.widths = list(widths)
