"""Exercises that check themselves (notebooks/11_exercises.ipynb).

The learner writes an operator's forward pass and its backward rule, a module, a loss;
``check(name, answer)`` runs `zkynet.gradcheck` on the answer (against finite differences
of the learner's own forward pass and against a reference written in jnp) and returns a
Verdict whose text says what is right or wrong: which element, the learner's number and
the expected one, and a hint. Code not written yet (a ``raise NotImplementedError(...)``
left in place) gives the instruction of what to write, not a traceback; code that fails
gives the error and the line it came from.

    from zkynet import exercises
    exercises.check("softplus", Softplus)   # Softplus: the learner's cg.Operator subclass

The answers are not here (the tests keep them): only what each answer must do.
"""

import math
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.gradcheck import GradientCheckError, check_gradients, check_operator

__all__ = ["EXERCISES", "Exercise", "Verdict", "check"]

RTOL, ATOL = 1e-6, 1e-9  # against the reference: forgiving of a float32 constant, not of a mistake
_PACKAGES = tuple(str(Path(str(m.__file__)).resolve().parent) for m in (sys.modules[__name__.split(".")[0]], jax, np))


@dataclass
class Verdict:
    """What check() found: `status` is "passed", "wrong" or "todo" (not written yet);
    `message` says it (and is what a notebook shows)."""

    exercise: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __repr__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Exercise:
    """One exercise: what to write (`task`), a hint shown with a wrong answer, and the
    check, a function of the answer that raises on a mistake and returns what passed."""

    name: str
    task: str
    hint: str
    run: Callable[[Any], str]


def _softplus(answer: Any) -> str:
    reports = check_operator(_instance(answer), reference=lambda x: jnp.logaddexp(x, 0.0), rtol=RTOL, atol=ATOL)
    return f"on {len(reports)} sets of shapes (a matrix, size-1 axes, a scalar)"


def _layer_norm_reference(x: Any, eps: float = 1e-5) -> Any:
    centred = x - x.mean(axis=-1, keepdims=True)
    return centred / jnp.sqrt((centred**2).mean(axis=-1, keepdims=True) + eps)


def _layer_norm(answer: Any) -> str:
    rng = np.random.default_rng(0)
    shapes = [(3, 5), (2, 2, 4)]
    for shape in shapes:
        check_gradients(
            _instance(answer), _layer_norm_reference, [rng.normal(size=shape) * 2 + 1], rtol=RTOL, atol=ATOL
        )
    return f"on inputs shaped {' and '.join(map(str, shapes))}"


def _conv1d_reference(x: Any, w: Any) -> Any:
    k = w.shape[0]
    return jnp.stack([jnp.dot(x[i : i + k], w) for i in range(x.shape[0] - k + 1)])


def _conv1d(answer: Any) -> str:
    rng = np.random.default_rng(1)
    shapes = [(7, 3), (5, 5), (6, 1)]
    for n, k in shapes:
        check_gradients(
            _instance(answer), _conv1d_reference, [rng.normal(size=n), rng.normal(size=k)], rtol=RTOL, atol=ATOL
        )
    return "for signals and kernels of lengths " + ", ".join(f"{n} and {k}" for n, k in shapes)


def _residual_block(answer: Any) -> str:
    dim = 4
    block = answer(dim)
    shapes = {name: tuple(p.shape) for name, p in block.named_parameters().items()}
    expected = {"W": (dim, dim), "b": (dim,)}
    if shapes != expected:
        raise _Wrong(
            f"ResidualBlock({dim}) has the parameters {shapes or 'none'}; it needs {expected}: declare them "
            "in __init__ with params=(cg.Parameter('W', ...), cg.Parameter('b', ...))"
        )
    if len(block.inputs) != 1:
        raise _Wrong(f"ResidualBlock takes one input, x; yours declares {len(block.inputs)}")

    def reference(params: dict[str, Any], x: Any) -> Any:
        return x + jnp.tanh(x @ params["W"] + params["b"])

    x = np.random.default_rng(2).normal(size=(3, dim))
    check_gradients(block, reference, [x], rtol=RTOL, atol=ATOL)
    return f"on a batch of 3 rows of {dim}, the gradients of x, W and b included"


def _cross_entropy_reference(logits: Any, labels: Any) -> Any:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - jnp.log(jnp.exp(shifted).sum(axis=1, keepdims=True))
    return -jnp.mean(jnp.take_along_axis(log_probabilities, labels[:, None], axis=1))


def _cross_entropy(answer: Any) -> str:
    rng = np.random.default_rng(3)
    logits, labels = rng.normal(size=(4, 5)) * 2, np.array([0, 3, 1, 4])
    check_gradients(_instance(answer), _cross_entropy_reference, [logits, labels], rtol=RTOL, atol=ATOL)
    huge = np.array([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 0.0]], np.float32)  # exp(1000) overflows
    loss = np.asarray(_instance(answer)(huge, np.array([0, 0])).value)
    if not np.isfinite(loss) or abs(float(loss) - 500.0) > 1e-3:
        raise _Wrong(
            f"with logits of 1000 the loss is {float(loss)}, expected 500 (the mean of 0 and 1000): exp(1000) "
            "overflows to inf. Subtract each row's largest logit before exponentiating: log softmax is unchanged"
        )
    return "on a batch of 4 rows of 5 classes, and on logits of 1000 without overflowing"


EXERCISES = {
    exercise.name: exercise
    for exercise in [
        Exercise(
            "softplus",
            "Softplus: `call` returns log(1 + exp(x)) of x.value, `_gradfn` its derivative",
            "d/dx log(1 + exp(x)) = exp(x) / (1 + exp(x)) = 1 / (1 + exp(-x)), the sigmoid of x",
            _softplus,
        ),
        Exercise(
            "layer_norm",
            "LayerNorm: `call` normalizes each row (the last axis) to mean 0 and variance 1, "
            "(x - mean) / sqrt(var + eps); `vjp` sends g back to x",
            "layer norm mixes the elements of a row, so it needs a vjp, not an elementwise _gradfn. "
            "With y = out and s = sqrt(var + eps): dx = (g - mean(g) - y * mean(g * y)) / s, means over the "
            "last axis (keepdims=True)",
            _layer_norm,
        ),
        Exercise(
            "conv1d",
            "Conv1d: `call` slides the kernel w (length k) along x (length n): out[i] = sum_j x[i + j] w[j], "
            "n - k + 1 outputs; `vjp` returns the cotangents of x and of w",
            "each out[i] = sum_j x[i + j] w[j] sends g[i] * w[j] to x[i + j] and g[i] * x[i + j] to w[j]: "
            "dw[j] = sum_i g[i] x[i + j] (a correlation of x with g), dx adds g[i] * w into x[i : i + k]",
            _conv1d,
        ),
        Exercise(
            "residual_block",
            "ResidualBlock(dim): a cg.Module with input x and parameters W (dim x dim) and b (dim), "
            "computing x + tanh(x @ W + b) with zkynet's operators",
            "declare the input with inputs=(cg.Variable('x'),) and the parameters with params=(...); in call(), "
            "use self.param('W') and self.param('b'), and op.tanh",
            _residual_block,
        ),
        Exercise(
            "cross_entropy",
            "SoftmaxCrossEntropy: `call` returns the mean over the batch of -log softmax(logits)[label] "
            "(logits (N, C), integer labels (N,)); `vjp` returns the cotangent of the logits, and None for "
            "the labels",
            "d loss / d logits = (softmax(logits) - one_hot(labels)) / N, times g; the labels get None. "
            "Compute log softmax as shifted - log(sum(exp(shifted))) with shifted = logits - max(logits)",
            _cross_entropy,
        ),
    ]
}


class _Wrong(Exception):
    """A mistake found by a check of its own (not by gradcheck)."""


def _instance(answer: Any) -> Any:
    return answer() if isinstance(answer, type) else answer


def check(name: str, answer: Any) -> Verdict:
    """Check the learner's `answer` to exercise `name` (one of EXERCISES): a Verdict saying
    it passed, what is wrong, or (for code not written yet) what to write."""
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; the exercises are {', '.join(EXERCISES)}")
    exercise = EXERCISES[name]
    title = getattr(answer, "__name__", type(answer).__name__)
    try:
        passed = exercise.run(answer)
    except NotImplementedError as e:
        return Verdict(
            name,
            "todo",
            f"{title} is not written yet ({e or 'NotImplementedError'}).\nWhat to write: {exercise.task}.\n"
            "Replace each `raise NotImplementedError(...)` in the cell above with your code, run that cell, "
            "then run this one again.",
        )
    except GradientCheckError as e:
        advice = f"What call() must compute: {exercise.task}" if e.input == "output" else f"Hint: {exercise.hint}"
        return Verdict(name, "wrong", f"✗ {title}: {_explain(e)}\n{advice}")
    except _Wrong as e:
        return Verdict(name, "wrong", f"✗ {title}: {e}")
    except Exception as e:
        nodes = "is not a valid JAX type" in str(e) and "Node" in str(e)
        hint = "call() and vjp() receive nodes: use x.value for x's array" if nodes else exercise.hint
        return Verdict(name, "wrong", f"✗ {title}: your code raised {type(e).__name__}: {e}{_where(e)}\nHint: {hint}")
    return Verdict(
        name,
        "passed",
        f"✓ {title} passes: its forward pass and gradients agree with finite differences and with a "
        f"reference, {passed}.",
    )


def _explain(e: GradientCheckError) -> str:
    """A gradient check's failure, said for a learner: which element, theirs and the expected."""
    if e.check.startswith("vjp shape") or ": shape " in e.check:
        return f"the cotangent your rule returns for {e.input} has the wrong shape ({e.check}). {e.context}"
    at = f"{e.input}[{', '.join(map(str, e.index))}]" if e.index else e.input
    count = f"{e.mismatches} of {e.total} elements are off" if e.total > 1 else "off"
    numbers = f"yours {_number(e.ours)}, expected {_number(e.expected)}"
    if e.input == "output":
        return f"the forward pass (call) is wrong at {at}: {numbers} ({count}). {e.context}"
    source = "finite differences of your own forward pass" if "finite differences" in e.check else "the reference"
    if "random direction" in e.check:
        what = f"back(g) for a random cotangent g, projected on a random direction, is wrong: {numbers}"
    elif e.check.startswith("jacobian"):
        index = ", ".join(map(str, e.index or ()))
        what = f"d out / d {e.input} (the full Jacobian, from back()) is wrong at [{index}]: {numbers}"
    else:  # a vector-Jacobian product: sum over i of g[i] d out[i] / d input
        what = f"back(g) for a random cotangent g is wrong at {at}: {numbers}"
    return f"the gradient with respect to {e.input}: {what}, by {source} ({count}). {e.context}"


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def _where(error: BaseException | None) -> str:
    """' (line N of the cell: <code>)': the last line of the learner's own code in the error's traceback."""
    frames: list[traceback.FrameSummary] = []
    while error is not None:  # an error and the errors it was raised from
        frames = [f for f in traceback.extract_tb(error.__traceback__) if not _is_library(f.filename)] + frames
        error = error.__cause__ or error.__context__
    if not frames:
        return ""
    frame = frames[-1]
    return f"\n  at line {frame.lineno} of your cell: {(frame.line or '').strip()}"


def _is_library(filename: str) -> bool:
    resolved = str(Path(filename).resolve()) if not filename.startswith("<") else filename
    return resolved.startswith(_PACKAGES) or resolved.startswith(sys.prefix) or resolved.startswith(sys.base_prefix)
