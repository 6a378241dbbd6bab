"""Derivatives as functions, from zkynet's own rules: grad, value_and_grad, jacobian,
jvp (forward mode), hvp and hessian. They compose (`grad(grad(f))`, `jvp(grad(f), ...)`).

`f` takes zkynet values (nodes; arrays and numbers are made input nodes) and returns
a node built from `op.*` (or a module's graph). Called on arrays, a transform returns
arrays; called on nodes, or while another transform's function or a module's `call()`
runs (a gradient penalty; a function closing over the outer one's argument, as in
`grad(lambda x: grad(lambda y: x * y)(1.0))`), it returns nodes that extend the
caller's graph, so that the outer derivative differentiates the inner one. The inner
backward pass is then built from zkynet operators (backward_graph.py), and the outer
one differentiates it with the same rules: JAX is the array library and the compiler,
never the differentiator. Each transform differentiates with respect to its own
arguments only (a fresh variable for each, even when given an outer node), so what the
caller computed from that node before is a constant to it, as in JAX.

Forward mode is reverse mode transposed: the vector-Jacobian product u -> J^T u is
linear in u, so its own vector-Jacobian product with a tangent t is J t. `jvp` builds
J^T u as a graph with u a stand-in node, then backpropagates t through it to u.
"""

import threading
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp

from zkynet.framework import cg, op
from zkynet.framework.errors import GradientError, HigherOrderError, ShapeError
from zkynet.framework.graph import context

Argnums = int | Sequence[int]


def grad(f: Callable[..., Any], argnums: Argnums = 0) -> Callable[..., Any]:
    """The gradient of scalar-valued `f` with respect to argument(s) `argnums` (a tuple
    of gradients for a sequence of them)."""
    value_and_gradient = value_and_grad(f, argnums)

    def gradient(*args: Any) -> Any:
        return value_and_gradient(*args)[1]

    return gradient


def value_and_grad(f: Callable[..., Any], argnums: Argnums = 0) -> Callable[..., tuple[Any, Any]]:
    """(f's value, its gradient), from one forward and one backward pass."""

    def value_and_gradient(*args: Any) -> tuple[Any, Any]:
        nested = _nested(args)
        inputs, wrt = _inputs(args, argnums, "grad")
        out = _scalar_output(_call(f, inputs), "grad")
        grads = cg.gradients(out, wrt, create_graph=nested)
        return _result(out, nested), _pack(grads, argnums, nested)

    return value_and_gradient


def jacobian(f: Callable[..., Any], argnums: Argnums = 0) -> Callable[..., Any]:
    """The full Jacobian of `f` with respect to argument(s) `argnums`, shaped
    output.shape + argument.shape (one backward pass per output element, batched)."""

    def jacobian_of(*args: Any) -> Any:
        if _nested(args):
            raise HigherOrderError(
                "jacobian() inside another derivative or a module's call is not built as a graph (an outer "
                "derivative could not differentiate it); use grad() or jvp() there instead"
            )
        inputs, wrt = _inputs(args, argnums, "jacobian")
        out = _single_output(_call(f, inputs), "jacobian")
        rows = cg.jacobian(cg.topological_order([out]), out)
        return _pack(
            [rows.get(x, jnp.zeros(out.shape + x.shape, jnp.result_type(x.dtype, float))) for x in wrt], argnums, False
        )

    return jacobian_of


def jvp(f: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
    """(f(*primals), the Jacobian of f at primals times `tangents`): forward mode, as the
    transpose of the vector-Jacobian product (see the module docstring)."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise GradientError(f"jvp got {len(primals)} primal(s) and {len(tangents)} tangent(s): give one tangent each")
    nested = _nested(primals) or _nested(tangents)
    inputs, wrt = _inputs(primals, tuple(range(len(primals))), "jvp")
    tangent_nodes = [_tangent(t, x, i) for i, (t, x) in enumerate(zip(tangents, wrt, strict=True))]
    out = _single_output(_call(f, inputs), "jvp")
    stand_in = cg.InputNode(jnp.zeros(out.shape, out.dtype), cg.Variable("u"))  # J^T u is linear in u
    pulled = cg.gradients(out, wrt, cotangents=stand_in, create_graph=True)
    (pushed,) = cg.gradients(pulled, [stand_in], cotangents=tangent_nodes, create_graph=nested)
    return _result(out, nested), pushed


def hvp(f: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]) -> Any:
    """The Hessian of scalar-valued `f` at `primals` times `tangents` (one per argument):
    the gradient of <grad f, tangents>, reverse mode over reverse mode."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise GradientError(f"hvp got {len(primals)} primal(s) and {len(tangents)} tangent(s): give one tangent each")
    nested = _nested(primals) or _nested(tangents)
    argnums = tuple(range(len(primals)))
    inputs, wrt = _inputs(primals, argnums, "hvp")
    tangent_nodes = [_tangent(t, x, i) for i, (t, x) in enumerate(zip(tangents, wrt, strict=True))]
    out = _scalar_output(_call(f, inputs), "hvp")
    grads = cg.gradients(out, wrt, create_graph=True)
    products = cg.gradients(grads, wrt, cotangents=tangent_nodes, create_graph=nested)
    return products[0] if len(products) == 1 else tuple(products)


def hessian(f: Callable[..., Any], argnums: int = 0) -> Callable[..., Any]:
    """The Hessian of scalar-valued `f` with respect to argument `argnums`, shaped
    argument.shape * 2: the Jacobian of the gradient."""

    def hessian_of(*args: Any) -> Any:
        if _nested(args):
            raise HigherOrderError(
                "hessian() inside another derivative or a module's call is not built as a graph (an outer "
                "derivative could not differentiate it); use hvp() there instead"
            )
        inputs, (x,) = _inputs(args, argnums, "hessian")
        out = _scalar_output(_call(f, inputs), "hessian")
        (gradient,) = cg.gradients(out, [x], create_graph=True)
        rows = cg.jacobian(cg.topological_order([gradient]), gradient)
        return rows.get(x, jnp.zeros(x.shape * 2, jnp.result_type(x.dtype, float)))

    return hessian_of


# ----------------------------------------------------------------------------- plumbing


class _Depth(threading.local):
    calls = 0  # how many transforms' functions are running (nested inside each other)


_depth = _Depth()


def _call(f: Callable[..., Any], inputs: Sequence[Any]) -> Any:
    """f(*inputs), counted as running inside a transform (see _nested)."""
    _depth.calls += 1
    try:
        return f(*inputs)
    finally:
        _depth.calls -= 1


def _nested(args: Sequence[Any]) -> bool:
    """Whether this transform's result must be a graph that an outer derivative can
    differentiate: it is given nodes, or it runs inside another transform's function or a
    module's call (whose nodes the function may close over)."""
    return _depth.calls > 0 or context.builder is not None or any(isinstance(a, cg.Node) for a in args)


def _inputs(args: Sequence[Any], argnums: Argnums, name: str) -> tuple[list[cg.Node], list[cg.Node]]:
    """`args` as nodes (arrays become input nodes), and those differentiated."""
    numbers = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for n in numbers:
        if not -len(args) <= n < len(args):
            raise GradientError(f"{name}: argnums {n} is out of range for {len(args)} argument(s)")
    numbers = tuple(n % len(args) for n in numbers)
    inputs = []
    for i, a in enumerate(args):
        if isinstance(a, cg.Node) and i in numbers and a.requires_grad:
            # a fresh variable that equals `a`: the derivative is taken with respect to it alone,
            # not through what the caller computed from `a` before (no perturbation confusion),
            # while an outer derivative still flows through it to `a`
            node = op.reshape(a, a.shape)
        elif isinstance(a, cg.Node) and i not in numbers:
            node = a
        elif i in numbers:  # an array, or a node that depends on nothing differentiable
            a = a.value if isinstance(a, cg.Node) else a
            node = cg.InputNode(cg.as_value(a, f"{name}: argument {i}"), cg.Variable(f"arg{i}"))
        else:
            node = cg.as_node(a, f"{name}: argument {i}")
        if i in numbers and not jnp.issubdtype(node.dtype, jnp.inexact):  # floats, or complex (JAX's convention)
            raise GradientError(
                f"{name}: argument {i} is {node.dtype}; derivatives are taken with respect to floating "
                f"values (pass {float(node.value) if node.shape == () else 'an array of floats'}, e.g. "
                "x.astype(float))"
            )
        inputs.append(node)
    return inputs, [inputs[n] for n in numbers]


def _single_output(out: Any, name: str) -> cg.Node:
    if isinstance(out, cg.ModuleGraph):
        out = out.root
    if not isinstance(out, cg.Node):
        raise GradientError(
            f"{name}: the function must return one node built from zkynet operators, got {type(out).__name__}"
        )
    return out


def _scalar_output(out: Any, name: str) -> cg.Node:
    out = _single_output(out, name)
    if out.shape != ():
        raise GradientError(
            f"{name}: the function must return a scalar, got shape {tuple(out.shape)} "
            "(sum it, or use jvp/jacobian for a tensor output)"
        )
    return out


def _tangent(t: Any, x: cg.Node, i: int) -> Any:
    node = t if isinstance(t, cg.Node) else cg.as_node(t, f"tangent {i}")
    if node.shape != x.shape or node.dtype != x.dtype:
        raise ShapeError(
            f"tangent {i} is {node.dtype}{list(node.shape)} but primal {i} is {x.dtype}{list(x.shape)}: "
            "a tangent has its primal's shape and dtype"
        )
    return node


def _result(node: cg.Node, nested: bool) -> Any:
    return node if nested else node.value


def _pack(grads: list[Any], argnums: Argnums, nested: bool) -> Any:
    values = [g if nested or not isinstance(g, cg.Node) else g.value for g in grads]
    return values[0] if isinstance(argnums, int) else tuple(values)
