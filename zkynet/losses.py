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
    """Mean over all elements of `binary_cross_entropy_terms`."""
    return op.mean(binary_cross_entropy_terms(logits, targets))


def binary_cross_entropy_terms(logits, targets):
    """Elementwise -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] = softplus(z) - z y,
    with softplus computed without overflow."""
    return op.softplus(logits) - logits * targets


IGNORE = -1  # a label that counts for nothing (prompt positions of a sequence task)


def softmax_cross_entropy(logits, labels, axis=-1):
    """Mean negative log-likelihood of integer `labels` under softmax(`logits`), over
    the labels that are not IGNORE."""
    labels = cg.as_node(labels).value  # data, not differentiated
    valid = labels != IGNORE
    one_hot = jax.nn.one_hot(labels, logits.shape[axis], dtype=logits.dtype, axis=axis)  # IGNORE: all zeros
    return -op.sum(op.log_softmax(logits, axis=axis) * one_hot) / jnp.maximum(jnp.sum(valid), 1)


def accuracy(logits, labels, axis=-1):
    """Fraction of (non-IGNORE) labels at which the largest logit sits."""
    valid = labels != IGNORE
    return jnp.sum((jnp.argmax(logits, axis=axis) == labels) & valid) / jnp.maximum(jnp.sum(valid), 1)


def binary_accuracy(logits, targets):
    return jnp.mean((logits > 0) == (targets > 0.5))


def classification_metrics(logits, labels):
    return {"accuracy": accuracy(logits, labels)}
