"""The backward pass as a graph: derivatives of derivatives from zkynet's own rules.

`backprop` (graph.py) runs each operator's backward rule on arrays: fast, and the
gradient is a plain array. `backprop_graph` runs the same rules on nodes (see
xp.py), so every cotangent is a node computed by zkynet operators from the
graph's nodes: the gradient is itself a graph, which `back()` differentiates
again with the same rules (a Hessian-vector product is the gradient of
<gradient, v>), and whose transpose gives forward mode (transforms.py).

The nodes it creates belong to a module call of their own, `back(<output>)`, inside
whatever module call is running (a gradient penalty's objective), so pictures and
paths tell the backward pass from the forward pass.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp

from zkynet.framework.cotangents import check_cotangent_dtype, check_cotangents, complex_cotangent, reducible_shape
from zkynet.framework.errors import GradientError, HigherOrderError
from zkynet.framework.graph import (
    ConstantNode,
    Node,
    OperatorNode,
    ValueView,
    as_value,
    backprop,
    context,
    one,
    operators,
    topological_order,
)
from zkynet.framework.module_call import ModuleCall


class BackwardPass:
    """What a backward pass's nodes name as their module: a module call's stand-in."""

    children: Mapping[str, Any] = {}

    def __init__(self, of: Node):
        self.functional_name = f"back({of.name})"


class _GraphInput(ValueView):
    """An operator's input as its rule sees it on nodes: `.value` is the node itself when it
    carries a gradient (what the rule computes from it stays differentiable, for every later
    derivative too), else its array; `requires_grad` says whether this pass needs its cotangent."""

    __slots__ = ("value", "requires_grad")
    value: Any

    def __init__(self, node: Node, needed: bool):
        self.value = node if node.requires_grad else node.value
        self.requires_grad = needed


def backprop_graph(
    order: Sequence[Node], seeds: Mapping[Node, Any], wrt: Iterable[Node] | None = None
) -> dict[Node, Node]:
    """{node: cotangent node} for the nodes of `order` (a topological order) that the seed
    cotangents ({root: node or array}) reach, each cotangent built from zkynet operators. With
    `wrt`, only the nodes depending on those get cotangents (the rest of the graph is left
    alone). Array seeds become constants of the backward pass (drawn inside its box)."""
    live = _depending_on(order, set(wrt)) if wrt is not None else None
    root = next(iter(seeds))
    caller = context.scope
    call_id = root.call_id if root.call_id is not None else (caller.call_id if caller is not None else 0)
    context.scope = ModuleCall(BackwardPass(root), f"back({root.name})", caller, call_id)
    try:
        grads: dict[Node, Node] = {r: _node(ct) for r, ct in seeds.items()}
        for node in reversed(order):
            g = grads.get(node)
            if g is None or not node.inputs or not node.requires_grad or (live is not None and node not in live):
                continue
            views = [_GraphInput(i, i.requires_grad and (live is None or i in live)) for i in node.inputs]
            assert isinstance(node, OperatorNode)  # only operator nodes have inputs
            for i, ct in enumerate(check_cotangents(node, _rule_on_nodes(node, g, views))):
                inp = node.inputs[i]
                if ct is None or not views[i].requires_grad:
                    continue
                ct = _node(ct)
                if ct.dtype.kind in "biu":
                    check_cotangent_dtype(node, i, ct.dtype)
                if inp.value.dtype.kind == "c" or ct.dtype.kind == "c":
                    ct = complex_cotangent(node, i, ct, operators.real)
                if ct.shape != inp.shape:
                    ct = _summed_to(ct, reducible_shape(node, i, ct.shape))
                previous = grads.get(inp)
                grads[inp] = ct if previous is None else previous + ct
    finally:
        context.scope = caller
    return grads


def _rule_on_nodes(node: OperatorNode, g: Node, views: list[_GraphInput]) -> Any:
    op = node.ref
    where = f"{node.path}: {type(op).__name__}"
    if not getattr(op, "differentiable_rule", True):
        raise HigherOrderError(
            f"{where}: this operator's backward rule is not itself differentiable, so derivatives "
            "of derivatives (back(create_graph=True), zkynet.grad of a gradient, jvp, hessian) cannot "
            f"pass through it. {op.differentiable_rule_advice}"
        )
    try:
        if node.saved is None:
            return op.vjp(g, node, *views)
        _, saved = op.forward(*views)  # what the forward kept, rebuilt as nodes
        return op.vjp(g, node, *views, saved=saved)
    except (TypeError, AttributeError) as e:
        if not _arrays_only(e):
            raise
        raise HigherOrderError(
            f"{where}: derivatives of derivatives run the backward rule on nodes, and this rule calls "
            f"a jnp/lax function or array method that takes arrays only ({e}). Write the rule with "
            "zkynet.framework.xp (the same names as jnp: xp.exp, xp.where, xp.sum, ...) so that it "
            "works on both, or use this operator for first-order gradients only"
        ) from e


def _arrays_only(e: TypeError | AttributeError) -> bool:
    """Whether `e` is a rule treating a node as an array: jnp refusing it (TypeError), or
    an array method a node lacks (x.value.at[...], AttributeError)."""
    if isinstance(e, AttributeError):
        return isinstance(getattr(e, "obj", None), Node)
    return "JAX type" in str(e) or "Node" in str(e)


def _summed_to(ct: Node, shape: tuple[int, ...]) -> Node:
    """`ct` summed over the axes broadcasting added or stretched to reach `shape` (as sum_to_shape)."""
    lead = ct.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and ct.shape[lead + i] != 1)
    return operators.reshape(operators.sum(ct, axes) if axes else ct, shape)


def _depending_on(order: Sequence[Node], sources: set[Node]) -> set[Node]:
    """The nodes of `order` that depend on any of `sources` (themselves included)."""
    live = set(sources)
    for node in order:
        if node not in live and any(i in live for i in node.inputs):
            live.add(node)
    return live


def gradients(
    outputs: Node | Sequence[Node],
    wrt: Sequence[Node],
    cotangents: Any = None,
    create_graph: bool = True,
) -> list[Any]:
    """d outputs / d each of `wrt` (nodes), as the vector-Jacobian product with `cotangents`
    (one per output; none needed for one scalar output). With `create_graph` each gradient
    is a node (differentiate it again: zkynet.grad, a gradient penalty inside a module's
    call); without, an array. A node of `wrt` the outputs do not depend on gets zeros."""
    roots = [outputs] if isinstance(outputs, Node) else list(outputs)
    if cotangents is None:
        bad = [r for r in roots if r.shape != ()]
        if bad:
            raise GradientError(
                f"gradients() of an output shaped {tuple(bad[0].shape)} needs a cotangent shaped like it "
                "(the vector of the vector-Jacobian product); only a scalar output has a gradient alone"
            )
        cotangents = [one(r.dtype) for r in roots]
    elif isinstance(outputs, Node):
        cotangents = [cotangents]
    if len(cotangents) != len(roots):
        raise GradientError(f"gradients() got {len(cotangents)} cotangent(s) for {len(roots)} output(s)")
    seeds: dict[Node, Any] = {}  # nodes, or arrays (made constants inside the backward pass)
    for root, ct in zip(roots, cotangents, strict=True):
        if ct is None:
            continue
        ct = ct if isinstance(ct, Node) else as_value(ct, "cotangent")
        if ct.shape != root.shape:
            raise GradientError(
                f"a cotangent must be shaped like its output {tuple(root.shape)}, got {tuple(ct.shape)}"
            )
        seeds[root] = seeds[root] + ct if root in seeds else ct
    wrt = list(wrt)
    order = topological_order(roots)
    if create_graph:
        grads: Mapping[Node, Any] = backprop_graph(order, seeds, wrt) if seeds else {}
    else:  # only the nodes between the seeds and `wrt`: the rest would be computed for nothing
        live = _depending_on(order, set(wrt))
        order = [node for node in order if node in live]
        grads = backprop(order, {r: _value(c) for r, c in seeds.items()}) if seeds else {}
    return [grads.get(x, _zeros_like(x, create_graph)) for x in wrt]


def _zeros_like(x: Node, as_node: bool) -> Any:
    zeros = jnp.zeros(x.shape, jnp.result_type(x.dtype, float))
    return ConstantNode(zeros) if as_node else zeros


def _value(x: Any) -> Any:
    return x.value if isinstance(x, Node) else x


def _node(x: Any, what: str = "cotangent") -> Node:
    return x if isinstance(x, Node) else ConstantNode(as_value(x, what))
