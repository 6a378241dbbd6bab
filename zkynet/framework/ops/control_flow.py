"""Control flow that survives jit: op.cond (one of two branches, chosen by a traced
boolean), op.fori_loop (a loop with a trip count known when the graph is built) and
op.while_loop (a loop until a traced condition fails: forward only).

Python's `if` and `while` on values raise under jit (a traced value has no truth value),
and Python's loops unroll into the graph. These run as lax.cond / lax.scan /
lax.while_loop: one node each, whatever the branch or the trip count.

Branches and loop bodies are functions of nodes, built into graphs of their own while
the operator runs (as op.scan builds its cell), so they must be *closed*: everything
they compute from comes in as an operand. A parameter or another node of the model used
from inside raises (pass it as an operand: `op.cond(p, f, g, x, self.param("W"))`);
arrays and numbers inside are constants.

Rules: cond's rule is a cond of the two branches' backward passes; fori_loop's is a
reverse loop over the steps, each rebuilding its step's graph from the carry it entered
with (kept by the forward loop) and applying zkynet's own back(). On nodes (derivatives
of derivatives) cond's rule is again an op.cond, of functions that build each branch's
gradient as a graph, and fori_loop's unrolls the loop into the graph (its trip count is
known). while_loop has no rule: its trip count is unknown until it runs.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
from jax import lax

from zkynet.framework import xp
from zkynet.framework.backward_graph import gradients
from zkynet.framework.builder import NodeLike, as_node
from zkynet.framework.errors import GradientError, ShapeError, UnregisteredParameterError, ValueTypeError
from zkynet.framework.graph import ConstantNode, Node, context
from zkynet.framework.module import Module, build_graph
from zkynet.framework.operator import Operator
from zkynet.framework.templates import Variable

__all__ = ["Cond", "ForiLoop", "WhileLoop", "cond", "fori_loop", "while_loop"]


class _Closed(Module):
    """A function of nodes as a module of `count` inputs, so that it builds a graph of its
    own (build_graph) on given values."""

    def __init__(self, fn: Callable[..., Any], count: int, name: str):
        super().__init__(inputs=[Variable(f"x{i}") for i in range(count)], name=name)
        self.fn = fn

    def call(self, *xs: Any) -> Any:
        return self.fn(*xs)


def _closed_graph(fn: Callable[..., Any], values: Sequence[Any], where: str, what: str) -> Any:
    """The graph of `fn` on `values` (arrays or tracers), refused unless it is closed (see the
    module docstring) and has one output."""
    try:
        graph = build_graph(_Closed(fn, len(values), what), list(values))
    except UnregisteredParameterError as e:
        raise UnregisteredParameterError(
            f"{where}: the {what} uses a parameter it was not given; pass parameters to it as operands "
            f"(op.cond(pred, f, g, x, self.param('W'))): {e}"
        ) from e
    if isinstance(graph.root, tuple):
        raise ShapeError(
            f"{where}: the {what} returned {len(graph.root)} outputs; return one node (op.stack or op.concat them)"
        )
    for node in graph.nodes:
        if not node.inputs and not isinstance(node, ConstantNode) and node.call_id != graph.call_id:
            raise ValueTypeError(
                f"{where}: the {what} reads {node!r}, a node of the enclosing graph; a branch or loop body "
                "computes only from its operands: pass that node as an operand"
            )
    return graph


def _input_grads(graph: Any, count: int, wanted: Sequence[bool], values: Sequence[Any]) -> list[Any]:
    """The gradients (after back()) of a closed graph's first `count` inputs, those `wanted`
    only (zeros where the graph does not use one)."""
    found = []
    for variable, want, value in zip(graph.module.inputs[:count], wanted, values, strict=True):
        if not want:
            continue
        nodes = graph._builder.bindings.get(variable, [])
        found.append(graph.grad(variable) if nodes else jnp.zeros(jnp.shape(value), jnp.result_type(value, float)))
    return found


def _flat(cotangents: Sequence[Any], dtype: Any) -> Any:
    """Cotangent nodes raveled and joined into one vector (an operator has one output)."""
    parts = [xp.reshape(xp.astype(c, dtype) if c.dtype != dtype else c, (-1,)) for c in cotangents]
    return parts[0] if len(parts) == 1 else xp.concatenate(parts)


def _unflat(flat: Any, like: Sequence[Any]) -> list[Any]:
    """The cotangents `_flat` joined, shaped and typed like `like` again."""
    found, start = [], 0
    for node in like:
        size = math.prod(node.shape)
        part = xp.reshape(flat[start : start + size], node.shape)
        found.append(xp.astype(part, node.dtype) if part.dtype != node.dtype else part)
        start += size
    return found


def _floating(dtype: Any) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.inexact))


class Cond(Operator):
    """`true_fn(*operands)` if `pred` else `false_fn(*operands)` (lax.cond): both branches
    are built (and compiled), one runs. The branches must return the same shape and dtype.
    The predicate gets no gradient. See the module docstring for the rule."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    variadic = True
    check_integer_overflow = False  # the branch's own operators checked their results

    def __init__(self, true_fn: Callable[..., Any], false_fn: Callable[..., Any]):
        super().__init__()
        self.branches = (true_fn, false_fn)

    def check(self, pred, *operands):
        if pred.shape != () or pred.dtype != jnp.bool_:
            raise ValueTypeError(
                f"{self._where()}: the predicate must be a boolean scalar, got {pred.dtype}{list(pred.shape)} "
                "(compare: x > 0, op.sum(x) > 1)"
            )

    def _run(self, index, values):
        graph = _closed_graph(self.branches[index], values, self._where(), ("false", "true")[1 - index] + " branch")
        return graph.root.value

    def call(self, pred, *operands):
        values = [xp.value_of(o.value) for o in operands]
        return lax.cond(xp.value_of(pred.value), lambda *v: self._run(0, v), lambda *v: self._run(1, v), *values)

    def vjp(self, g, out, pred, *operands):
        wanted = [o.requires_grad and _floating(o.dtype) for o in operands]
        if xp.on_nodes(g):
            if not any(wanted):
                return (None,) * (len(operands) + 1)
            branches = [_BranchGradient(fn, wanted) for fn in self.branches]
            flat = Cond(*branches)(xp.value_of(pred.value), g, *[o.value for o in operands])
            parts = iter(_unflat(flat, [o for o, w in zip(operands, wanted, strict=True) if w]))
            return (None, *[next(parts) if w else None for w in wanted])
        values = [o.value for o in operands]

        def back(index):
            def branch(g, *values):
                graph = _closed_graph(self.branches[index], values, self._where(), "branch")
                graph.back(g)
                return tuple(_input_grads(graph, len(values), wanted, values))

            return branch

        found = iter(lax.cond(pred.value, back(0), back(1), g, *values))
        return (None, *[next(found) if w else None for w in wanted])


class _BranchGradient:
    """A branch's vector-Jacobian product as a function of nodes (g, *operands) -> the
    cotangents of the `wanted` operands, raveled into one vector: what cond's rule runs as
    a cond on nodes, so that its own rule differentiates it again."""

    def __init__(self, fn: Callable[..., Any], wanted: Sequence[bool]):
        self.fn, self.wanted = fn, tuple(wanted)

    def __call__(self, g: Node, *operands: Node) -> Node:
        out = self.fn(*operands)
        wrt = [o for o, w in zip(operands, self.wanted, strict=True) if w]
        found = gradients(as_node(out), wrt, cotangents=g, create_graph=True)
        return _flat(found, g.dtype)


class ForiLoop(Operator):
    """`body(i, carry, *operands)` for i = lower .. upper - 1, starting from `init`: the
    final carry (lax.fori_loop, as a scan over the steps). The trip count is known when
    the graph is built. See the module docstring for the rule; the forward loop keeps
    the carry each step entered with, the backward loop recomputes each step from it."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    variadic = True
    check_integer_overflow = False

    def __init__(self, lower: int, upper: int, body: Callable[..., Any]):
        super().__init__()
        self.lower, self.upper, self.body = int(lower), int(upper), body

    def _step(self, i, carry, operands):
        return _closed_graph(self.body, (i, carry, *operands), self._where(), "loop body")

    def forward(self, init, *operands):
        values = [xp.value_of(o.value) for o in operands]

        keep = context.grad_enabled  # inside cg.no_grad() no backward loop will read the carries

        def step(carry, i):
            new = self._step(i, carry, values).root.value
            if new.shape != carry.shape or new.dtype != carry.dtype:
                raise ShapeError(
                    f"{self._where()}: the loop body returned {new.dtype}{list(new.shape)} for a carry "
                    f"{carry.dtype}{list(carry.shape)}: it must keep the carry's shape and dtype"
                )
            return new, carry if keep else None

        final, entering = lax.scan(step, xp.value_of(init.value), jnp.arange(self.lower, self.upper))
        return final, entering

    def vjp(self, g, out, init, *operands, saved=None):
        wanted = [o.requires_grad and _floating(o.dtype) for o in operands]
        if not _floating(init.dtype):  # an integer carry: nothing reaches the result differentiably
            return (None,) * (1 + len(operands))
        if xp.on_nodes(g):  # unrolled: the trip count is known, so the loop is a graph like any other
            carry: Any = init.value
            for i in range(self.lower, self.upper):
                carry = self.body(jnp.asarray(i, jnp.int32), carry, *[o.value for o in operands])
            wrt = [init.value] if init.requires_grad else []
            wrt += [o.value for o, w in zip(operands, wanted, strict=True) if w]
            found = iter(gradients(as_node(carry), wrt, cotangents=g, create_graph=True))
            d_init = next(found) if init.requires_grad else None
            return (d_init, *[next(found) if w else None for w in wanted])
        values = [o.value for o in operands]
        zeros = tuple(jnp.zeros(v.shape, jnp.result_type(v, float)) for v, w in zip(values, wanted, strict=True) if w)

        def back_step(totals, step):
            d_carry, d_operands = totals
            i, carry = step
            graph = self._step(i, carry, values)
            graph.back(d_carry)
            found = _input_grads(graph, 2 + len(values), [False, True, *wanted], [i, carry, *values])
            new_d_operands = tuple(a + b for a, b in zip(d_operands, found[1:], strict=True))
            return (found[0].astype(d_carry.dtype), new_d_operands), None

        steps = jnp.arange(self.lower, self.upper)
        (d_init, d_operands), _ = lax.scan(back_step, (g, zeros), (steps, saved), reverse=True)
        found = iter(d_operands)
        return (d_init, *[next(found) if w else None for w in wanted])


class WhileLoop(Operator):
    """`body(carry, *operands)` while `condition(carry, *operands)` holds (lax.while_loop):
    forward only. Differentiating through it raises GradientError: its trip count is
    unknown until it runs, so no backward loop can be laid out; bound it with op.fori_loop."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    variadic = True
    check_integer_overflow = False
    vjp_uses_inputs = vjp_uses_out = False

    def __init__(self, condition: Callable[..., Any], body: Callable[..., Any]):
        super().__init__()
        self.condition, self.body = condition, body

    def call(self, init, *operands):
        values = [xp.value_of(o.value) for o in operands]
        where = self._where()

        def test(carry):
            result = _closed_graph(self.condition, (carry, *values), where, "loop condition").root.value
            if result.shape != () or result.dtype != jnp.bool_:
                raise ValueTypeError(
                    f"{where}: the loop condition must return a boolean scalar, got {result.dtype}{list(result.shape)}"
                )
            return result

        def step(carry):
            return _closed_graph(self.body, (carry, *values), where, "loop body").root.value

        return lax.while_loop(test, step, xp.value_of(init.value))

    def vjp(self, g, out, init, *operands):
        raise GradientError(
            f"{self._where()}: op.while_loop is forward-only: its trip count is unknown until it runs, so "
            "there is no backward loop to lay out. Give it inputs that need no gradient (op.stop_gradient), "
            "or bound the loop with op.fori_loop(lower, upper, body, init) (a fixed trip count; use op.cond "
            "inside the body to skip the steps past the end)"
        )


def cond(pred: NodeLike, true_fn: Callable[..., Any], false_fn: Callable[..., Any], *operands: NodeLike) -> Node:
    """`true_fn(*operands)` where the boolean scalar `pred` holds, else `false_fn(*operands)`,
    under jit too (lax.cond). Branches are functions of nodes returning one node of the same
    shape and dtype, computing only from their operands (see the module docstring)."""
    return Cond(true_fn, false_fn)(pred, *operands)


def fori_loop(lower: int, upper: int, body: Callable[..., Any], init: NodeLike, *operands: NodeLike) -> Node:
    """carry = body(i, carry, *operands) for i in range(lower, upper), from `init`; returns
    the final carry. `lower` and `upper` are Python ints (the trip count is known when the
    graph is built); `i` is an int32 scalar; the body keeps the carry's shape and dtype and
    computes only from its arguments (see the module docstring). Differentiable, to any order."""
    for bound, name in ((lower, "lower"), (upper, "upper")):
        if isinstance(bound, Node) or not isinstance(bound, int) or isinstance(bound, bool):
            raise ValueTypeError(
                f"fori_loop: {name} must be a Python int (the trip count is fixed when the graph is built), got "
                f"{bound!r}; for a loop that stops on a traced condition, use op.while_loop (forward only)"
            )
    if upper <= lower:
        return as_node(init)
    return ForiLoop(lower, upper, body)(init, *operands)


def while_loop(condition: Callable[..., Any], body: Callable[..., Any], init: NodeLike, *operands: NodeLike) -> Node:
    """carry = body(carry, *operands) while condition(carry, *operands) (a boolean scalar node);
    returns the final carry. Forward only (see WhileLoop)."""
    return WhileLoop(condition, body)(init, *operands)
