"""Fully connected networks: Linear layers and the multi-layer perceptron."""

import itertools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from zkynet import init
from zkynet.framework import cg
from zkynet.models.layers import Activation, Dropout, Sequential

RELU_LIKE = ("relu", "leaky_relu", "gelu")


class Linear(cg.Module):
    """y = x @ W + b, with W shaped (in_features, out_features); x may carry any
    number of leading (batch) dimensions.

    Two ways to build one:
      * ``Linear(in_features, out_features, bias=True, init_fn=..., key=...)``: sizes
        (ints); W drawn by `init_fn` from `key`, b zeros;
      * ``Linear(W0, b0)``, the original zkynet API: the initial weight matrix
        (in, out) and bias vector (out,) as arrays (``b0=None``: no bias).
    Which one is meant is read from the first argument (an int or a 2-D array), and
    anything that fits neither is refused."""

    def __init__(self, in_features, out_features=None, bias=True, init_fn="glorot_uniform", key=0):
        if _is_size(in_features):
            if not _is_size(out_features):
                raise TypeError(
                    f"Linear({in_features!r}, ...): with in_features an int, out_features must be "
                    f"an int too, got {type(out_features).__name__} {out_features!r:.60}"
                )
            weights = init.get(init_fn)(init.key_of(key), (int(in_features), int(out_features)))
            initial_bias = jnp.zeros(int(out_features)) if bias else None
        else:
            weights, initial_bias = _initial_arrays(in_features, out_features, bias, init_fn, key)
        params = [cg.Parameter("W", weights)]
        if initial_bias is not None:
            params.append(cg.Parameter("b", initial_bias))
        super().__init__(inputs=(cg.Variable("x"),), params=params)
        self.bias = initial_bias is not None

    @property
    def input_dim(self):
        """in_features (the original zkynet API's name)."""
        return self.param("W").value.shape[0]

    @property
    def output_dim(self):
        """out_features (the original zkynet API's name)."""
        return self.param("W").value.shape[1]

    def call(self, x):
        y = x @ self.param("W")
        return y + self.param("b") if self.bias else y


def _is_size(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _initial_arrays(weights, bias_values, bias, init_fn, key):
    """(W0, b0 or None) of Linear(W0, b0), checked."""
    what = "Linear(W0, b0)"
    usage = (
        "Linear takes (in_features, out_features) as ints, or (W0, b0) as initial arrays (the original "
        f"zkynet API); got {type(weights).__name__} {weights!r:.60}"
    )
    try:
        weights = cg.as_value(weights, f"{what}: W0")
    except cg.ValueTypeError:
        raise TypeError(usage) from None
    if weights.ndim == 0:
        raise TypeError(usage)
    if weights.ndim != 2:
        raise cg.ShapeError(
            f"{what}: W0 must be a matrix shaped (in_features, out_features), got shape {tuple(weights.shape)}"
        )
    if init_fn != "glorot_uniform" or not (isinstance(key, int) and key == 0):
        raise TypeError(
            f"{what}: init_fn and key draw weights from sizes; with initial arrays they would be "
            "ignored: leave them out"
        )
    if _is_size(bias_values):
        raise TypeError(
            f"{what}: W0 is an array, so the second argument is the initial bias b0 (an array "
            f"shaped ({weights.shape[1]},)), not a size: {bias_values!r}"
        )
    if bias_values is None:
        return weights, None
    if not bias:
        raise TypeError(f"{what}: bias=False contradicts the initial bias b0 given; pass b0=None for no bias")
    bias_values = cg.as_value(bias_values, f"{what}: b0")
    if bias_values.shape != (weights.shape[1],):
        raise cg.ShapeError(
            f"{what}: W0 is shaped {tuple(weights.shape)}, so b0 must be shaped "
            f"({weights.shape[1]},), got {tuple(bias_values.shape)}"
        )
    return weights, bias_values


class MLP(Sequential):
    """Linear layers of the given `widths` ([in, hidden..., out]) with an activation
    (and optional dropout) between them; the output is left linear (logits).
    Weights start He-normal for ReLU-like activations, Glorot-uniform otherwise."""

    def __init__(self, widths, activation="relu", dropout=0.0, init_fn=None, key=0):
        if len(widths) < 2:
            raise ValueError(f"an MLP needs at least [in, out] widths, got {widths}")
        init_fn = init_fn or ("he_normal" if activation in RELU_LIKE else "glorot_uniform")
        keys = jax.random.split(init.key_of(key), len(widths) - 1)
        layers: list[cg.Module] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
            layers.append(Linear(n_in, n_out, init_fn=init_fn, key=keys[i]))
            if i < len(widths) - 2:
                layers.append(Activation(activation))
                if dropout:
                    layers.append(Dropout(dropout))
        super().__init__(layers)
        self.widths = list(widths)
