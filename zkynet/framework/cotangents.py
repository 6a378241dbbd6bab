"""The checks on what an operator's backward rule returns, shared by `backprop` (graph.py,
on arrays) and `backprop_graph` (backward_graph.py, on nodes): one cotangent per input,
each of a floating dtype and of its input's shape or one broadcasting summed away, and
complex cotangents only from rules that follow JAX's convention. A rule that breaks one
gets a BackwardRuleError (or GradientError) that names it and says what to return."""

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import numpy as np

from zkynet.framework.errors import BackwardRuleError, GradientError
from zkynet.framework.slice_cotangent import SliceCotangent, dense


class RuleNode(Protocol):
    """What the checks read of the node whose rule ran: a graph.Node (graph.py imports this
    module, so the class itself cannot be imported here)."""

    @property
    def value(self) -> jax.Array: ...

    @property
    def dtype(self) -> Any: ...

    @property
    def ref(self) -> Any: ...

    @property
    def inputs(self) -> Sequence["RuleNode"]: ...

    @property
    def path(self) -> str: ...


def complex_cotangent(node: RuleNode, i: int, ct: Any, real: Callable[[Any], Any]) -> Any:
    """`ct` for input `i` of `node` when either is complex: refused unless the operator's
    rule follows JAX's convention (Operator.complex_rule); for a real input, its real part."""
    inp = node.inputs[i]
    if inp.value.dtype.kind == "c" and not getattr(node.ref, "complex_rule", False):
        raise GradientError(
            f"{_rule(node)} has no rule for complex values ({_input_name(node, i)} is {inp.value.dtype}): "
            "zkynet differentiates complex numbers with JAX's convention (jax.grad's df/dx - i df/dy) "
            "only through operators whose rules follow it (elementwise arithmetic, exp, log, sqrt, tanh, "
            "sigmoid, sin, cos, abs, conj, real, sums and products, matmul, einsum, shapes and indexing). "
            "Split it into real and imaginary parts (op.real, op.real(x * -1j)) before this operator"
        )
    if inp.value.dtype.kind != "c":
        ct = dense(ct) if type(ct) is SliceCotangent else ct
        return real(ct)
    return ct


def _input_name(node: RuleNode, i: int) -> str:
    names = [v.short_name for v in getattr(node.ref, "inputs", ())]
    return f"input {names[i]!r}" if i < len(names) else f"input #{i}"


def _rule(node: RuleNode) -> str:
    return f"{node.path}: {type(node.ref).__name__}.vjp"


def rule_failed(node: RuleNode, g: Any, error: Exception) -> BackwardRuleError:
    """The error for a backward rule that raised on its cotangent (a `_gradfn` whose
    partial has another shape than its input, say): named, with what it was given."""
    return BackwardRuleError(
        f"{_rule(node)} failed for the output cotangent {getattr(g, 'dtype', '')}{list(np.shape(g))} "
        f"(inputs {', '.join(f'{i.value.dtype}{list(i.value.shape)}' for i in node.inputs)}): "
        f"{type(error).__name__}: {error}. A rule returns one cotangent per input, shaped like it "
        "(a _gradfn: the elementwise partial, shaped like the output)"
    )


def check_cotangents(node: RuleNode, cotangents: Any) -> tuple[Any, ...]:
    """`cotangents` as a tuple with one entry per input of `node`, or a BackwardRuleError."""
    count = len(node.inputs)
    if not isinstance(cotangents, (tuple, list)):
        raise BackwardRuleError(
            f"{_rule(node)} returned {type(cotangents).__name__}, not a tuple of cotangents: return "
            f"one per input ({count}), e.g. `return (g * 2,)` for a one-input operator, None for an "
            "input that gets no gradient"
        )
    if len(cotangents) != count:
        names = ", ".join(_input_name(node, i).split(" ", 1)[1].strip("'") for i in range(count))
        raise BackwardRuleError(
            f"{_rule(node)} returned {len(cotangents)} cotangent(s) for {count} input(s) ({names}): "
            "return exactly one per input, in the order of the inputs, None for one that gets no gradient"
        )
    return tuple(cotangents)


def reducible_shape(node: RuleNode, i: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of input `i` of `node`, once sure a cotangent shaped `shape` can be summed
    back to it: the axes summed away (extra leading ones, n where the input has 1) must be
    ones that broadcasting the input to the output made (they are axes of the output, of
    the same size); else BackwardRuleError."""
    target = node.inputs[i].value.shape
    out = node.value.shape
    lead = len(shape) - len(target)
    summed = [] if lead < 0 else [*range(lead), *(lead + a for a, t in enumerate(target) if t == 1)]
    if (
        lead < 0
        or any(t != s and t != 1 for t, s in zip(target, shape[lead:], strict=True))
        or any(
            shape[a] != 1 and (a - len(shape) + len(out) < 0 or out[a - len(shape) + len(out)] != shape[a])
            for a in summed
        )
    ):
        raise BackwardRuleError(
            f"{_rule(node)} returned a cotangent shaped {tuple(shape)} for {_input_name(node, i)}, "
            f"which is shaped {tuple(target)} (the output {tuple(out)}): a cotangent must have its input's "
            "shape, or the shape broadcasting gave the input in this operator (extra leading axes or n "
            "where the input has 1, each an axis of the output), which back() sums away"
        )
    return target


def check_cotangent_dtype(node: RuleNode, i: int, dtype: Any) -> None:
    """BackwardRuleError for an integer or boolean cotangent of a floating input (summing it
    into the gradient would truncate it: 2.5 becomes 2)."""
    inp = node.inputs[i]
    if inp.dtype.kind not in "biu":
        raise BackwardRuleError(
            f"{_rule(node)} returned a cotangent of dtype {np.dtype(dtype).name} for {_input_name(node, i)}, which is "
            f"{inp.dtype}: a cotangent is a floating value (an integer one truncates the gradient); "
            "compute it in the input's dtype, e.g. g * 2.0 or .astype(x.dtype)"
        )
