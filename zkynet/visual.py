"""Pictures of computational graphs, drawn with Graphviz.

Nodes are grouped in boxes (clusters) by the module call that made them, so
`composite/m1/mult` sits inside `m1` inside `composite`. For big models,
module calls deeper than `depth` are drawn as one box each: a transformer reads
embed -> block -> block -> head instead of thousands of nodes.
"""
import os
import re
import tempfile
import time
import warnings

import graphviz
import numpy as np

from zkynet.framework import cg

_STYLES = {
    cg.InputNode: dict(shape="ellipse", style="filled", fillcolor="#fff2cc"),
    cg.ParameterNode: dict(shape="box", style="filled,rounded", fillcolor="#dae8fc"),
    cg.ConstantNode: dict(shape="plaintext", fontcolor="#555555"),
    cg.OperatorNode: dict(shape="ellipse", style="filled", fillcolor="#ffffff"),
}
_MODULE_BOX = dict(shape="box3d", style="filled", fillcolor="#e1d5e7")
_AUTO_MAX_SHAPES = 40  # depth="auto" collapses module calls until at most this many shapes remain


def plot_cg(root, save_path=None, wait=0, title=None, view=False, format=None, depth="auto",
            rankdir="LR"):
    """Render the graph behind `root` (a node, a ModuleGraph, or a tuple of nodes) and
    return the path of the image.

    save_path: where to write; its extension picks the format (.png, .svg, .pdf).
        Default: ``<tempdir>/zkynet/<title>.png``.
    wait: with `view`, seconds to pause after opening the viewer.
    title: caption of the picture (and default file name).
    view: open the image in the system viewer (off by default: works headless).
    format: image format when save_path has no extension (default "png").
    depth: draw module calls nested deeper than this as single boxes (0 = the
        top-level module is one box); None = every node; "auto" = the most detail
        that keeps the picture under ~40 shapes.
    """
    roots = root.roots if isinstance(root, cg.ModuleGraph) else (
        tuple(root) if isinstance(root, (tuple, list)) else (root,))
    roots = tuple(cg.as_node(r) for r in roots)
    nodes = [n for n in cg.topological_order(roots) if not _empty_constant(n)]
    if depth == "auto":
        depth = _auto_depth(nodes)
    save_path, format = _output(save_path, format, title, roots)

    graph = graphviz.Digraph(format=format, graph_attr=dict(rankdir=rankdir, fontname="Helvetica"),
                             node_attr=dict(fontname="Helvetica", fontsize="11"),
                             edge_attr=dict(arrowsize="0.7"))
    if title:
        graph.attr(label=title, labelloc="t", fontsize="16")
    _draw(graph, nodes, roots, depth)
    try:
        path = graph.render(outfile=save_path, cleanup=True)
    except graphviz.ExecutableNotFound as e:
        raise RuntimeError("plot_cg needs Graphviz's 'dot' program: run setup.sh, or install it "
                           "(apt-get install graphviz / brew install graphviz)") from e
    if view:
        graphviz.view(path)
        time.sleep(wait)
    return path


def _output(save_path, format, title, roots):
    if save_path is None:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", title or f"cg-call-{roots[0].call_id}").strip("_")
        save_path = os.path.join(tempfile.gettempdir(), "zkynet", f"{name or 'graph'}.{format or 'png'}")
    extension = os.path.splitext(save_path)[1].lstrip(".").lower()
    if not extension:
        save_path = f"{save_path}.{format or 'png'}"
    elif format is None:
        format = extension
    os.makedirs(os.path.dirname(os.path.abspath(save_path)), exist_ok=True)
    return save_path, format or "png"


def _empty_constant(node):
    """Size-0 constants (getitem's list of integer positions when there are none) say
    nothing worth drawing."""
    return isinstance(node, cg.ConstantNode) and node.value.size == 0


def _ancestors(scope):
    """The module calls from the top-level call down to `scope`."""
    chain = []
    while scope is not None:
        chain.append(scope)
        scope = scope.parent
    return chain[::-1]


def _shape_of(node, depth):
    """What stands for `node` in the picture: itself, or the module call at `depth`
    that contains it."""
    if depth is None or node.scope is None or node.scope.depth < depth:
        return node
    return _ancestors(node.scope)[depth]


def _auto_depth(nodes):
    if len(nodes) <= _AUTO_MAX_SHAPES:
        return None
    deepest = max((n.scope.depth for n in nodes if n.scope is not None), default=0)
    for depth in range(deepest, -1, -1):
        if len({_shape_of(n, depth) for n in nodes}) <= _AUTO_MAX_SHAPES:
            return depth
    return 0


def _draw(graph, nodes, roots, depth):
    shapes = {node: _shape_of(node, depth) for node in nodes}
    members = {}  # module call -> the shapes drawn directly inside its cluster
    counts = {}  # collapsed module call -> how many nodes it hides
    for node, shape in shapes.items():
        if shape is node:
            members.setdefault(node.scope, []).append(node)
        else:
            counts[shape] = counts.get(shape, 0) + 1
    for box in counts:
        members.setdefault(box.parent, []).append(box)

    children = {}
    for scope in members:
        chain = [None] + _ancestors(scope)
        for parent, child in zip(chain[:-1], chain[1:]):
            children.setdefault(parent, set()).add(child)

    def ident(shape):
        return f"n{shape.id}" if isinstance(shape, cg.Node) else f"m{id(shape)}"

    def emit(target, scope):
        for shape in members.get(scope, ()):
            if isinstance(shape, cg.Node):
                style = dict(_STYLES[type(shape)])
                if shape in roots:
                    style.update(penwidth="2.5")
                target.node(ident(shape), _label(shape), **style)
            else:
                target.node(ident(shape), f"{shape.name}\n{type(shape.module).__name__} · "
                                          f"{counts[shape]} nodes", **_MODULE_BOX)
        for child in sorted(children.get(scope, ()), key=lambda s: s.path):
            with target.subgraph(name=f"cluster_{id(child)}") as cluster:
                cluster.attr(label=child.name, labeljust="l", fontsize="11",
                             style="rounded" if child.depth == 0 else "rounded,dashed",
                             color="#444444" if child.depth == 0 else "#888888")
                emit(cluster, child)

    emit(graph, None)

    edges = set()
    for node in nodes:
        for inp in node.inputs:
            if inp not in shapes:
                continue
            edge = (ident(shapes[inp]), ident(shapes[node]))
            if edge[0] != edge[1] and edge not in edges:
                edges.add(edge)
                graph.edge(*edge)


def _label(node):
    return f"{node.name}\n{_format_value(node.value)}"


def _format_value(value):
    """Small values in full, others as dtype[shape]; traced values have only a shape."""
    kind = f"{value.dtype}{list(value.shape)}"
    if value.size > 4:
        return kind
    try:
        array = np.asarray(value)
    except Exception:  # a tracer under jit/vmap: no concrete value to show
        return kind
    with np.printoptions(precision=4, suppress=True):
        text = np.array2string(array, separator=", ") if array.ndim else f"{array.item():.6g}"
    return text if len(text) <= 40 else kind
