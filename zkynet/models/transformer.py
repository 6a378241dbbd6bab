"""Transformers from zkynet operators: token and position embeddings, multi-head
attention with causal and padding masks, pre-norm blocks, a decoder-only
language model and an encoder for classification, plus sampling."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from zkynet import init
from zkynet.framework import cg, op
from zkynet.framework.compile import forward
from zkynet.models.fcn import Linear
from zkynet.models.layers import Dropout, Embedding, LayerNorm

MASKED = op.MASKED  # an attention score that softmax turns into 0 (finite: fully masked rows stay NaN-free)


def sinusoidal_positions(length, dim):
    """The fixed position encodings of "Attention is all you need": sin/cos waves of
    geometrically spaced frequencies, (length, dim)."""
    positions = np.arange(length)[:, None]
    rates = np.exp(-math.log(10000.0) * np.arange(0, dim, 2) / dim)
    table = np.zeros((length, dim), np.float32)
    table[:, 0::2] = np.sin(positions * rates)
    table[:, 1::2] = np.cos(positions * rates)[:, : dim // 2]
    return jnp.asarray(table)


class MultiHeadAttention(cg.Module):
    """softmax(q k^T / sqrt(d_head) + mask) v in `heads` heads, from one fused q/k/v
    projection. `mask` (broadcastable to (B, heads, T, T)) is True where a query may
    look at a key."""

    def __init__(self, dim, heads, dropout=0.0, key=0):
        if dim % heads:
            raise ValueError(f"model width {dim} must be divisible by the {heads} heads")
        super().__init__(inputs=(cg.Variable("x"), cg.Variable("mask", optional=True)))
        k1, k2 = jax.random.split(init.key_of(key))
        self.qkv = Linear(dim, 3 * dim, key=k1)
        self.out = Linear(dim, dim, key=k2)
        self.dropout = Dropout(dropout)
        self.dim, self.heads = dim, heads

    def call(self, x, mask=None):
        batch, steps = x.shape[:2]
        per_head = self.dim // self.heads
        qkv = op.reshape(self.qkv(x), (batch, steps, 3, self.heads, per_head))
        q, k, v = (op.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in range(3))  # (B, heads, T, d_head)
        if self.dropout.rate == 0:  # one node with its own backward rule (op.Attention)
            attended = op.attention(q, k, v, mask, scale=1 / math.sqrt(per_head))
        else:  # dropout acts on the probabilities, so they must be a node of their own
            scores = q @ op.transpose(k, (0, 1, 3, 2)) / math.sqrt(per_head)
            if mask is not None:
                scores = op.where(mask, scores, MASKED)
            attended = self.dropout(op.softmax(scores, axis=-1)) @ v
        merged = op.reshape(op.transpose(attended, (0, 2, 1, 3)), (batch, steps, self.dim))
        return self.out(merged)


class FeedForward(cg.Module):
    def __init__(self, dim, hidden, key=0):
        super().__init__(inputs=(cg.Variable("x"),))
        k1, k2 = jax.random.split(init.key_of(key))
        self.up, self.down = Linear(dim, hidden, key=k1), Linear(hidden, dim, key=k2)

    def call(self, x):
        return self.down(op.gelu(self.up(x)))


class Block(cg.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim, heads, mlp, dropout=0.0, key=0):
        super().__init__(inputs=(cg.Variable("x"), cg.Variable("mask", optional=True)))
        k1, k2 = jax.random.split(init.key_of(key))
        self.norm1, self.norm2 = LayerNorm(dim), LayerNorm(dim)
        self.attention = MultiHeadAttention(dim, heads, dropout, key=k1)
        self.mlp = FeedForward(dim, mlp, key=k2)
        self.dropout = Dropout(dropout)

    def call(self, x, mask=None):
        x = x + self.dropout(self.attention(self.norm1(x), mask))
        return x + self.dropout(self.mlp(self.norm2(x)))


class _Trunk(cg.Module):
    """Embeddings (tokens + positions) and a stack of blocks: what both the language
    model and the classifier are built on."""

    def __init__(self, vocabulary, dim, heads, layers, mlp, max_length, positions, dropout, key):
        keys = jax.random.split(init.key_of(key), layers + 2)
        self.positions: cg.Parameter | cg.Constant
        if positions == "learned":
            self.positions = cg.Parameter("positions", init.normal(keys[1], (max_length, dim), stddev=0.02))
        elif positions == "sinusoidal":
            self.positions = cg.Constant("positions", sinusoidal_positions(max_length, dim))
        else:
            raise ValueError(f"positions must be 'sinusoidal' or 'learned', got {positions!r}")
        learned = (self.positions,) if isinstance(self.positions, cg.Parameter) else ()
        super().__init__(inputs=(cg.Variable("tokens"),), params=learned)
        self.embed = Embedding(vocabulary, dim, key=keys[0])
        self.blocks = [Block(dim, heads, mlp, dropout, key=k) for k in keys[2:]]
        self.dropout = Dropout(dropout)
        self.norm = LayerNorm(dim)
        self.max_length = max_length

    def encode(self, tokens, mask):
        steps = tokens.shape[1]
        if steps > self.max_length:
            raise ValueError(f"sequences of {steps} tokens are longer than max_length={self.max_length}")
        embedded = self.embed(tokens)  # sinusoidal positions are a float32 constant: in the embeddings' dtype
        x = self.dropout(embedded + op.astype(op.getitem(self.positions, slice(None, steps)), embedded.dtype))
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class TransformerLM(_Trunk):
    """Decoder-only language model: next-token logits (B, T, vocabulary) from token
    ids (B, T), each position attending to itself and earlier positions only."""

    def __init__(
        self,
        vocabulary,
        dim=128,
        heads=4,
        layers=2,
        mlp=512,
        max_length=256,
        positions="sinusoidal",
        dropout=0.0,
        key=0,
    ):
        super().__init__(vocabulary, dim, heads, layers, mlp, max_length, positions, dropout, key)
        self.head = Linear(dim, vocabulary, key=jax.random.fold_in(init.key_of(key), 7))

    def call(self, tokens):
        steps = tokens.shape[1]
        causal = jnp.tril(jnp.ones((steps, steps), bool))
        return self.head(self.encode(tokens, causal))


class TransformerClassifier(_Trunk):
    """Encoder for classification: class logits from padded token ids (B, T), each
    token attending to every non-padding token, mean-pooled over the real tokens."""

    def __init__(
        self,
        vocabulary,
        num_classes,
        dim=128,
        heads=4,
        layers=2,
        mlp=512,
        max_length=256,
        positions="sinusoidal",
        dropout=0.0,
        pad=0,
        key=0,
    ):
        super().__init__(vocabulary, dim, heads, layers, mlp, max_length, positions, dropout, key)
        self.head = Linear(dim, num_classes, key=jax.random.fold_in(init.key_of(key), 7))
        self.pad = pad

    def call(self, tokens):
        real = cg.as_node(tokens).value != self.pad  # (B, T)
        hidden = self.encode(tokens, real[:, None, None, :])
        weights = (real / jnp.maximum(real.sum(axis=1, keepdims=True), 1))[:, :, None].astype(hidden.dtype)
        return self.head(op.sum(hidden * weights, axis=1))


def generate(model, prompt, steps, temperature=0.0, key=None, pad=0):
    """Extend token ids `prompt` (B, P) by `steps` tokens: greedy when temperature is 0,
    else sampled from softmax(logits / temperature) with PRNG `key`. The model runs
    compiled on one fixed window: the whole sequence, or for a model with a
    `max_length` shorter than that, its last max_length tokens."""
    if temperature > 0 and key is None:
        raise ValueError("sampling with a temperature needs a PRNG key")
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, start = prompt.shape
    tokens = jnp.concatenate([prompt, jnp.full((batch, steps), pad, jnp.int32)], axis=1)
    window = min(tokens.shape[1], getattr(model, "max_length", tokens.shape[1]))
    logits_of = forward(model)
    for position in range(start, start + steps):
        first = max(0, position - window)
        logits = logits_of(tokens[:, first : first + window])[:, position - 1 - first]
        if temperature > 0:
            key, draw = jax.random.split(key)
            chosen = jax.random.categorical(draw, logits / temperature)
        else:
            chosen = jnp.argmax(logits, axis=-1)
        tokens = tokens.at[:, position].set(chosen.astype(jnp.int32))
    return tokens
