"""Autoencoders: dense and convolutional ones that squeeze inputs through a small
code and rebuild them, and a variational autoencoder (VAE) whose code is a
distribution, sampled with the reparameterization trick from explicit PRNG keys."""

import jax
import jax.numpy as jnp

from zkynet import init, losses
from zkynet.framework import cg, op
from zkynet.models.cnn import Conv2d, MaxPool2d
from zkynet.models.fcn import MLP, Linear
from zkynet.models.layers import Activation, Flatten, Sequential


class DenseAutoencoder(cg.Module):
    """x (N, features) -> code (N, bottleneck) -> reconstruction in [0, 1] (sigmoid)."""

    def __init__(self, features, bottleneck=8, hidden=(128,), activation="relu", key=0):
        super().__init__(inputs=(cg.Variable("x"),))
        k1, k2 = jax.random.split(init.key_of(key))
        self.encoder = MLP([features, *hidden, bottleneck], activation=activation, key=k1)
        self.decoder = MLP([bottleneck, *reversed(hidden), features], activation=activation, key=k2)

    def encode(self, x):
        return self.encoder(x)

    def call(self, x):
        return op.sigmoid(self.decoder(self.encoder(x)))


class Upsample2d(cg.Module):
    """Nearest-neighbour upsampling of (N, C, H, W) by an integer factor."""

    def __init__(self, factor=2):
        super().__init__(inputs=(cg.Variable("x"),))
        self.factor = factor

    def call(self, x):
        n, c, h, w = x.shape
        f = self.factor
        wide = op.broadcast_to(op.reshape(x, (n, c, h, 1, w, 1)), (n, c, h, f, w, f))
        return op.reshape(wide, (n, c, h * f, w * f))


class ConvAutoencoder(cg.Module):
    """Images (N, C, H, W) -> [conv -> ReLU -> 2x2 max-pool] per channel count ->
    dense code (bottleneck) -> dense -> [upsample -> conv -> ReLU] -> conv -> sigmoid."""

    def __init__(self, input_shape=(1, 8, 8), channels=(16, 32), bottleneck=8, key=0):
        super().__init__(inputs=(cg.Variable("x"),))
        keys = iter(jax.random.split(init.key_of(key), 2 * len(channels) + 3))
        c, h, w = input_shape
        encoder, shapes = [], []
        for out in channels:
            encoder += [Conv2d(c, out, 3, padding="same", key=next(keys)), Activation("relu"), MaxPool2d(2)]
            shapes.append((c, h, w))
            c, h, w = out, h // 2, w // 2
        self.code_shape = (c, h, w)
        self.encoder = Sequential(encoder + [Flatten(), Linear(c * h * w, bottleneck, key=next(keys))])
        self.expand = Linear(bottleneck, c * h * w, key=next(keys))
        decoder = []
        for out, _, _ in reversed(shapes[1:]):
            decoder += [Upsample2d(2), Conv2d(c, out, 3, padding="same", key=next(keys)), Activation("relu")]
            c = out
        decoder += [Upsample2d(2), Conv2d(c, input_shape[0], 3, padding="same", key=next(keys))]
        self.decoder = Sequential(decoder)

    def encode(self, x):
        return self.encoder(x)

    def call(self, x):
        code = op.relu(self.expand(self.encoder(x)))
        return op.sigmoid(self.decoder(op.reshape(code, (x.shape[0],) + self.code_shape)))


class VAE(cg.Module):
    """Variational autoencoder for inputs in [0, 1] (N, features). The encoder gives
    the mean and log-variance of q(z|x); z = mean + exp(logvar / 2) * eps with eps
    drawn from the call's PRNG key (training), or z = mean when the call has no key.
    Returns (reconstruction logits, mean, logvar): see `vae_loss`."""

    def __init__(self, features, latent=8, hidden=(256,), key=0):
        super().__init__(inputs=(cg.Variable("x"),))
        k1, k2 = jax.random.split(init.key_of(key))
        self.encoder = MLP([features, *hidden, 2 * latent], key=k1)
        self.decoder = MLP([latent, *reversed(hidden), features], key=k2)
        self.latent = latent

    def call(self, x):
        stats = self.encoder(x)
        mean, logvar = stats[:, : self.latent], stats[:, self.latent :]
        key = cg.rng_key()
        z = mean if key is None else mean + op.exp(logvar * 0.5) * _noise(key, mean)
        return self.decoder(z), mean, logvar

    def sample(self, count, key):
        """`count` new inputs decoded from z ~ N(0, I): (count, features) in [0, 1]."""
        z = jax.random.normal(init.key_of(key), (count, self.latent))
        return op.sigmoid(self.decoder(z)).value


def vae_loss(outputs, x):
    """The negative evidence lower bound per example (nats): Bernoulli reconstruction
    cross-entropy plus KL(q(z|x) || N(0, I)), averaged over the batch."""
    logits, mean, logvar = outputs
    reconstruction = op.sum(losses.binary_cross_entropy_terms(logits, x))
    kl = 0.5 * op.sum(op.exp(logvar) + mean * mean - 1 - logvar)
    return (reconstruction + kl) / x.shape[0]


def _noise(key, mean):
    """N(0, 1) shaped like `mean`, drawn in float32 (or wider) and cast to its dtype: a
    bfloat16 run samples the float32 run's noise, rounded (a draw in bfloat16 differs)."""
    return jax.random.normal(key, mean.shape, jnp.promote_types(mean.dtype, jnp.float32)).astype(mean.dtype)
