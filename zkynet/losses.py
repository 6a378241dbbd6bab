"""Losses, built from zkynet operators so that back() differentiates them with
the model, and metrics computed on plain arrays.

Cross-entropies work in log space from logits: stable for logits of any size.
"""
import jax
import jax.numpy as jnp

from zkynet.framework import cg, op


def mse(prediction, target):
    """Mean squared error over all elements."""
    return op.mean(op.square(prediction - target))


def binary_cross_entropy(logits, targets):
    """Mean of -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] = softplus(z) - z y,
    with softplus computed without overflow."""
    return op.mean(op.softplus(logits) - logits * targets)


def softmax_cross_entropy(logits, labels, axis=-1):
    """Mean negative log-likelihood of integer `labels` under softmax(`logits`)."""
    labels = cg.as_node(labels).value  # data, not differentiated
    log_probs = op.log_softmax(logits, axis=axis)
    one_hot = jax.nn.one_hot(labels, logits.shape[axis], dtype=logits.dtype, axis=axis)
    return -op.sum(log_probs * one_hot) / labels.size


def accuracy(logits, labels, axis=-1):
    """Fraction of rows whose largest logit is at the label."""
    return jnp.mean(jnp.argmax(logits, axis=axis) == labels)


def binary_accuracy(logits, targets):
    return jnp.mean((logits > 0) == (targets > 0.5))


def classification_metrics(logits, labels):
    return {"accuracy": accuracy(logits, labels)}
