"""How much of a graph a picture shows, so that Graphviz lays it out in bounded time.

A shape is what stands for a node in the picture: the node itself, or the module call
at the drawing depth that contains it (drawn as one box). Graphviz's layout grows much
faster than the graph, so plot_cg (visual.py) picks the depth here: `_auto_depth`, the
most detail under ~40 shapes; `_bounded_depth`, the deepest depth whose shapes (and the
ranks their edges span, `_layout_cost`) fit `max_nodes`, collapsing further with a
warning, or PlotError when nothing fits.
"""

import warnings

from zkynet.framework import cg
from zkynet.framework.builder import ModuleCall
from zkynet.framework.errors import PlotError

Shape = cg.Node | ModuleCall  # what the picture draws: a node, or a collapsed module call
Chains = dict[ModuleCall, list]  # each scope's _ancestors, cached

_AUTO_MAX_SHAPES = 40  # depth="auto" collapses module calls until at most this many shapes remain
MAX_NODES = 150  # more shapes than this are collapsed (dot's layout time explodes past a few hundred)
LAYOUT_COST_PER_NODE = 25  # _layout_cost allowed per max_nodes: about 5 s of dot for a shared-parameter chain


def _ancestors(scope):
    """The module calls from the top-level call down to `scope`."""
    chain = []
    while scope is not None:
        chain.append(scope)
        scope = scope.parent
    return chain[::-1]


def _shape_of(node, depth, chains=None):
    """What stands for `node` in the picture: itself, or the module call at `depth`
    that contains it. `chains` caches each scope's _ancestors (deep nesting)."""
    scope = node.scope
    if depth is None or scope is None or scope.depth < depth:
        return node
    if chains is None:
        return _ancestors(scope)[depth]
    chain = chains.get(scope)
    if chain is None:
        chain = chains[scope] = _ancestors(scope)
    return chain[depth]


def _auto_depth(nodes, limit=_AUTO_MAX_SHAPES):
    """The most detail (None, else the deepest depth) that draws at most `limit` shapes;
    0 when none does."""
    if len(nodes) <= limit:
        return None
    deepest = max((n.scope.depth for n in nodes if n.scope is not None), default=0)
    chains: Chains = {}
    for depth in range(deepest, -1, -1):
        if _count_shapes(nodes, depth, chains) <= limit:
            return depth
    return 0


def _count_shapes(nodes, depth, chains=None):
    chains = {} if chains is None else chains
    return len(nodes) if depth is None else len({_shape_of(n, depth, chains) for n in nodes})


def _bounded_depth(nodes, depth, max_nodes):
    """`depth`, or the deepest shallower one when drawing at `depth` would take more than
    `max_nodes` shapes or too much layout work (said with a warning); PlotError when no
    depth is shallow enough."""
    chains: Chains = {}
    budget = LAYOUT_COST_PER_NODE * max_nodes

    def fits(d):
        count = _count_shapes(nodes, d, chains)
        return count <= max_nodes and _layout_cost(nodes, d, chains) <= budget, count

    ok, count = fits(depth)
    if ok:
        return depth
    cost = _layout_cost(nodes, depth, chains)
    why = (
        f"takes {count} shapes, more than max_nodes={max_nodes}"
        if count > max_nodes
        else f"takes {count} shapes whose edges span many ranks (a node shared by distant steps): about "
        f"{cost} units of layout work, more than {budget} ({LAYOUT_COST_PER_NODE} x max_nodes)"
    )
    deepest = max((n.scope.depth for n in nodes if n.scope is not None), default=-1)
    start = deepest if depth is None else min(depth - 1, deepest)
    for shallower in range(start, -1, -1):
        ok, fewer = fits(shallower)
        if ok:
            warnings.warn(
                f"plot_cg: drawing depth={depth!r} {why} (dot's layout time grows much faster than "
                f"the graph); collapsed to depth={shallower} instead: each module call at that depth "
                f"is one box ({fewer} shapes). To see more, plot a smaller graph, or pass "
                "max_nodes=None (dot is still stopped after `timeout` seconds)",
                stacklevel=3,
            )
            return shallower
    outside = sum(1 for n in nodes if n.scope is None)
    raise PlotError(
        f"plot_cg: drawing this graph {why}, and {outside} of its nodes were made outside any "
        "module call, so collapsing module calls into boxes cannot hide them. Build the "
        "computation inside a cg.Module (its calls can be drawn as boxes), plot a smaller part "
        "of it, or pass max_nodes=None to try anyway (dot is stopped after `timeout` seconds)"
    )


def _edges(nodes, shapes):
    """The edges between the shapes drawn ({node: its shape}), once each, in creation order."""
    edges: dict[tuple[Shape, Shape], None] = {}
    for node in nodes:
        head = shapes[node]
        for inp in node.inputs:
            tail = shapes.get(inp)
            if tail is not None and tail is not head:
                edges.setdefault((tail, head), None)
    return list(edges)


def _layout_cost(nodes, depth, chains):
    """About how much work dot's layout is: the shapes, plus the bends dot adds to each
    edge per rank it spans (an edge from a parameter shared by the first and the 100th
    step spans 100 ranks). Ranks by longest path, a source placed just before its first user."""
    shapes = {node: _shape_of(node, depth, chains) for node in nodes}
    edges = _edges(nodes, shapes)
    rank: dict[Shape, int] = {}
    heads: dict[Shape, list[Shape]] = {}
    for tail, head in edges:  # creation order is a topological order of the shapes
        rank[head] = max(rank.get(head, 0), rank.get(tail, 0) + 1)
        heads.setdefault(tail, []).append(head)
    has_input = {head for _, head in edges}
    for tail, users in heads.items():
        if tail not in has_input:
            rank[tail] = min(rank[u] for u in users) - 1
    return len(set(shapes.values())) + sum(max(0, rank[h] - rank[t] - 1) for t, h in edges)
