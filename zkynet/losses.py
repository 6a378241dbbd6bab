"""Losses, built from zkynet operators so that back() differentiates them with
the model, and metrics computed on plain arrays.

Cross-entropies work in log space from logits: stable for logits of any size.
"""

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework import cg, op
from zkynet.framework.errors import LabelError, ShapeError
from zkynet.framework.graph import as_value


def mse(prediction, target):
    """Mean squared error over all elements. `target` is shaped like `prediction` (or
    broadcasts to its shape: a scalar); shapes that would broadcast to something else,
    (N, 1) against (N,) giving N x N differences, are refused with ShapeError."""
    target = _checked_target("mse", prediction, target, "target")
    return op.mean(op.square(prediction - target))


def binary_cross_entropy(logits, targets):
    """Mean over all elements of `binary_cross_entropy_terms`."""
    return op.mean(binary_cross_entropy_terms(logits, targets))


def binary_cross_entropy_terms(logits, targets):
    """Elementwise -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] = softplus(z) - z y,
    with softplus computed without overflow. `targets` are probabilities in [0, 1], shaped
    like `logits`; concrete targets outside [0, 1] are refused (LabelError), traced ones
    (under jit) make the terms NaN, and shapes that would broadcast into something else
    are refused (ShapeError)."""
    targets = _checked_target("binary_cross_entropy", logits, targets, "targets")
    values = targets.value if isinstance(targets, cg.Node) else targets
    terms = op.softplus(logits) - logits * targets
    if isinstance(values, jax.core.Tracer):  # under jit: NaN (the NaN guard stops), not a wrong loss
        anywhere = jnp.any(~((values >= 0) & (values <= 1)))  # NaN too
        return terms * jnp.where(anywhere, jnp.nan, 1).astype(terms.dtype)
    concrete = np.asarray(values)
    outside = ~((concrete >= 0) & (concrete <= 1))  # NaN is no probability either
    if outside.any():
        at = tuple(int(i) for i in np.argwhere(outside)[0])
        raise LabelError(
            f"binary_cross_entropy: target {float(concrete[at])} at {list(at)} is not a probability: "
            "targets must be in [0, 1] (a class label 0/1, or a pixel intensity scaled to [0, 1])"
        )
    return terms


def _checked_target(loss, prediction, target, what):
    """`target` as a node or array: ValueTypeError if it is not numbers, ShapeError unless
    it broadcasts to `prediction`'s own shape (the loss averages over the prediction's
    elements; any other broadcast changes what is compared)."""
    if not isinstance(target, (cg.Node, jax.Array)):
        target = as_value(target, f"{loss}: the {what}")
    shape, other = tuple(prediction.shape), tuple(np.shape(target) if not hasattr(target, "shape") else target.shape)
    try:
        fits = np.broadcast_shapes(shape, other) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(
            f"{loss}: the {what} shaped {other} does not fit the prediction shaped {shape}: they must have the "
            "same shape (broadcasting them would compare every prediction with every target"
            + (f"; reshape the {what} to {shape}" if int(np.prod(other)) == int(np.prod(shape)) else "")
            + ")"
        )
    return target


IGNORE = -1  # a label that counts for nothing (prompt positions of a sequence task)


def softmax_cross_entropy(logits, labels, axis=-1):
    """Mean negative log-likelihood of integer `labels` under softmax(`logits`), over
    the labels that are not IGNORE.

    `labels` are integers shaped like `logits` without its class `axis`, each in
    0..classes-1 or IGNORE. Refused with LabelError, always (shapes and dtypes are
    known even under jit): float or boolean labels (a float 1.0 is not a class: cast
    with labels.astype(int)), a shape that does not match, an empty batch.
    Refused when the labels are concrete (eager calls, checked on the host): a label
    >= the number of classes, a negative label other than IGNORE, a batch whose
    labels are all IGNORE (there is nothing to average). Under jit the labels are
    traced and cannot be checked without stopping the compiled step: such a batch
    makes the loss and its gradients NaN instead of a silently wrong number, so the
    NaN guard (zkynet.training.NanGuard) stops the run; run that batch eagerly
    (TrainStep(..., jit=False)) to have the label named.
    """
    labels = cg.as_node(labels).value  # data, not differentiated
    shape = tuple(logits.shape)
    if not shape:
        raise LabelError("softmax_cross_entropy: the logits are a scalar; they need a class axis")
    if not -len(shape) <= axis < len(shape):
        raise LabelError(f"softmax_cross_entropy: axis {axis} is out of range for logits shaped {shape}")
    classes = shape[axis]
    expected = shape[: axis % len(shape)] + shape[axis % len(shape) + 1 :]
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise LabelError(
            f"softmax_cross_entropy: labels must be integer class indices, got {labels.dtype}; "
            "cast them with labels.astype(int) (a float label is never a class)"
        )
    if tuple(labels.shape) != expected:
        raise LabelError(
            f"softmax_cross_entropy: labels shaped {tuple(labels.shape)} do not fit logits shaped "
            f"{shape}: expected one label per row of logits, shaped {expected} (the logits without "
            f"their class axis {axis})"
        )
    if labels.size == 0 or classes == 0:
        raise LabelError(
            f"softmax_cross_entropy: empty batch (logits shaped {shape}): there is no loss to "
            "average; skip empty batches (e.g. Batches(..., drop_last=True))"
        )
    out_of_range = ((labels < 0) & (labels != IGNORE)) | (labels >= classes)
    valid = labels != IGNORE
    if isinstance(labels, jax.core.Tracer):
        scale = jnp.where(jnp.any(out_of_range) | ~jnp.any(valid), jnp.nan, 1).astype(logits.dtype)
    else:
        _check_labels(np.asarray(labels), classes)
        scale = None
    one_hot = jax.nn.one_hot(labels, classes, dtype=logits.dtype, axis=axis)  # IGNORE: all zeros
    loss = -op.sum(op.log_softmax(logits, axis=axis) * one_hot) / jnp.maximum(jnp.sum(valid), 1)
    return loss if scale is None else loss * scale


def _check_labels(labels, classes):
    bad = ((labels < 0) & (labels != IGNORE)) | (labels >= classes)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise LabelError(
            f"softmax_cross_entropy: label {int(labels[at])} at {list(at)} is not a class: "
            f"the logits have {classes} classes, so labels must be in 0..{classes - 1}, or "
            f"{IGNORE} (IGNORE) for a position that counts for nothing"
        )
    if (labels == IGNORE).all():
        raise LabelError(
            f"softmax_cross_entropy: every label of this batch is IGNORE ({IGNORE}): there is "
            "nothing to average; leave such batches out"
        )


def accuracy(logits, labels, axis=-1):
    """Fraction of (non-IGNORE) labels at which the largest logit sits."""
    valid = labels != IGNORE
    return jnp.sum((jnp.argmax(logits, axis=axis) == labels) & valid) / jnp.maximum(jnp.sum(valid), 1)


def binary_accuracy(logits, targets):
    return jnp.mean((logits > 0) == (targets > 0.5))


def classification_metrics(logits, labels):
    return {"accuracy": accuracy(logits, labels)}
