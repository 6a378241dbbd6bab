"""Generic building blocks: a chain of layers, activations, dropout, flatten,
token embeddings, normalization (layer, RMS, group, batch)."""

import jax
import jax.numpy as jnp

from zkynet import init
from zkynet.framework import cg, op
from zkynet.framework.graph import context

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


class RMSNorm(cg.Module):
    """Scale the last axis to unit root mean square, then by a learned scale per feature
    (no centering, no shift: as in LLaMA-style transformers)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__(inputs=(cg.Variable("x"),), params=(cg.Parameter("scale", jnp.ones(dim)),))
        self.eps = eps

    def call(self, x):
        return op.rms_norm(x, self.eps) * self.param("scale")


def _where(module):
    """Where the module call running now sits in the model (``model/block/norm``)."""
    return context.scope.path if context.scope is not None else module.functional_name


def _channels(module, x, channels):
    """The broadcast shape of a per-channel value for x (N, C, *spatial), once sure x has C channels."""
    if x.ndim < 2 or x.shape[1] != channels:
        raise cg.ShapeError(
            f"{_where(module)}: expected x shaped (N, {channels}, ...) (channels on axis 1), "
            f"got {x.dtype}{list(x.shape)}"
        )
    return (1, channels) + (1,) * (x.ndim - 2)


class GroupNorm(cg.Module):
    """Normalize x (N, C, *spatial) over each group of C / num_groups channels and the
    spatial axes, per example, then scale and shift per channel (Wu & He; num_groups=1
    is LayerNorm over (C, *spatial), num_groups=C is InstanceNorm)."""

    def __init__(self, num_groups, channels, eps=1e-5):
        if channels % num_groups:
            raise ValueError(f"GroupNorm: {channels} channels do not split into {num_groups} groups")
        super().__init__(
            inputs=(cg.Variable("x"),),
            params=(cg.Parameter("scale", jnp.ones(channels)), cg.Parameter("shift", jnp.zeros(channels))),
        )
        self.num_groups, self.channels, self.eps = num_groups, channels, eps

    def call(self, x):
        shape = _channels(self, x, self.channels)
        grouped = op.reshape(x, (x.shape[0], self.num_groups, -1))
        normalized = op.reshape(op.layer_norm(grouped, self.eps), x.shape)
        return normalized * op.reshape(self.param("scale"), shape) + op.reshape(self.param("shift"), shape)


class BatchNorm(cg.Module):
    """Normalize each channel of x (N, C, *spatial), axis 1, over the batch and spatial
    axes, then scale and shift per channel (Ioffe & Szegedy; BatchNorm1d/2d/3d in one).

    A training call (one given an `rng`, as TrainStep's are: see cg.training) uses the
    batch's statistics and updates the running ones, `momentum` of the way towards them
    (the variance unbiased, as PyTorch); any other call (EvalStep, plain calls) uses the
    running statistics. These are cg.State values: not trained, saved and loaded with the
    parameters (`state_dict()`, checkpoints), carried by TrainStep from step to step."""

    def __init__(self, channels, momentum=0.1, eps=1e-5):
        if not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm momentum must be in [0, 1], got {momentum}")
        super().__init__(
            inputs=(cg.Variable("x"),),
            params=(cg.Parameter("scale", jnp.ones(channels)), cg.Parameter("shift", jnp.zeros(channels))),
        )
        self.running_mean = cg.State("running_mean", jnp.zeros(channels))  # attributes: registered too
        self.running_var = cg.State("running_var", jnp.ones(channels))
        self.channels, self.momentum, self.eps = channels, momentum, eps

    def call(self, x):
        shape = _channels(self, x, self.channels)
        axes = (0, *range(2, x.ndim))
        mean, var = cg.as_node(self.running_mean), cg.as_node(self.running_var)
        if cg.training():
            normalized = op.layer_norm(x, self.eps, axis=axes)
            count = x.size // self.channels
            if count < 2:
                raise cg.ShapeError(
                    f"{_where(self)}: training needs more than one value per channel to estimate a "
                    f"variance, got x {x.dtype}{list(x.shape)}"
                )
            values = x.value.astype(mean.dtype)  # the statistics carry no gradient: plain arrays
            batch_mean = jnp.mean(values, axis=axes)
            batch_var = jnp.mean(jnp.square(values - batch_mean.reshape(shape)), axis=axes) * (count / (count - 1))
            cg.update_state(self.running_mean, (1 - self.momentum) * mean.value + self.momentum * batch_mean)
            cg.update_state(self.running_var, (1 - self.momentum) * var.value + self.momentum * batch_var)
        else:
            normalized = (x - op.reshape(mean, shape)) / op.sqrt(op.reshape(var, shape) + self.eps)
        return normalized * op.reshape(self.param("scale"), shape) + op.reshape(self.param("shift"), shape)
