"""The original zkynet API, kept working beside ours.

Code written for the original zkynet runs unchanged. What it needs beyond our own
API is small, and gathered here (or noted where it lives):
  * `op.Multiply`: the original's name for `op.Mult`; operator classes are called on
    values, `op.Add()(a, b)`, as ours are.
  * `cg.get_all_nodes(root)` / `cg.get_input_nodes(root)`: the nodes of a graph as sets.
  * `Operator.gradfn(inpt)` and `OperatorNode.grad(child)` (operator.py), `node.children`
    and node equality by call, template and value (graph.py).
  * `fcn.Linear(W0, b0)` from initial arrays (zkynet.models.fcn), and
    `plot_cg(..., save_path="out/cg-simple")` without an extension, which writes
    ``out/cg-simple.png`` and returns that path (zkynet.visual).
"""

from typing import Any

from zkynet.framework.graph import InputNode, Node, ParameterNode, topological_order
from zkynet.framework.module_graph import ModuleGraph
from zkynet.framework.ops.elementwise import Mult

Multiply = Mult  # the original zkynet's name for elementwise multiplication


def _roots(root: Any) -> tuple[Node, ...]:
    if isinstance(root, ModuleGraph):
        return root.roots
    if isinstance(root, (tuple, list)):
        return tuple(root)
    return (root,)


def get_all_nodes(root: Node | ModuleGraph) -> set[Node]:
    """Every node of the graph behind `root` (a node, a tuple of them or a ModuleGraph),
    as a set (the original zkynet API; `ModuleGraph.nodes` gives them in order)."""
    return set(topological_order(_roots(root)))


def get_input_nodes(root: Node | ModuleGraph) -> set[Node]:
    """The leaves of the graph behind `root` that stand for inputs and parameters (the
    original zkynet made both InputNodes), as a set."""
    return {n for n in topological_order(_roots(root)) if isinstance(n, (InputNode, ParameterNode))}
