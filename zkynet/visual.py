"""Pictures of computational graphs, drawn with Graphviz.

Nodes are grouped in boxes (clusters) by the module call that made them, so
`composite/m1/mult` sits inside `m1` inside `composite`. For big models,
module calls deeper than `depth` are drawn as one box each: a transformer reads
embed -> block -> block -> head instead of thousands of nodes.

The gradient's own graph (`back(create_graph=True)`, `zkynet.grad` of a gradient) draws
too: the nodes a backward pass created sit in its own box, ``back(<output>)``, drawn in
red, apart from the forward pass's nodes that they read.

Gradients draw too: after `back()`, ``plot_cg(result, show_grads=True)`` writes each
node's gradient (its cotangent) beside its value, and `backprop_steps` draws the backward
pass one rule at a time, the node whose rule runs highlighted and the cotangent it sends
written on the edges to its inputs. What a node's label says (name, value, gradient) is
written by visual_labels.py.

Drawing always finishes in bounded time. Graphviz's layout grows much faster than
the graph (a 200-node chain whose nodes all share one parameter took dot minutes),
so: pictures of more than `max_nodes` shapes are collapsed automatically to the
deepest module depth that fits (with a warning that says so; visual_layout.py picks
the depth); edges out of (or into) a node with many of them (a parameter shared by
every step) do not steer the layout; and dot itself is stopped after `timeout`
seconds (PlotError with advice).
"""

import itertools
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

import graphviz
import numpy as np

from zkynet.framework import cg
from zkynet.framework.backward_graph import BackwardPass
from zkynet.framework.builder import ModuleCall
from zkynet.framework.errors import BackwardNotRunError, PlotError
from zkynet.framework.graph import backprop, one
from zkynet.visual_labels import _GRAD_FONT, _array, _compact, _format_value, _label

# how much of a graph is drawn (module calls collapsed into boxes) is visual_layout.py's;
# its limits are importable from here too, as before
from zkynet.visual_layout import LAYOUT_COST_PER_NODE as LAYOUT_COST_PER_NODE
from zkynet.visual_layout import MAX_NODES, Chains, Shape, _ancestors, _auto_depth, _bounded_depth, _edges, _shape_of

_STYLES = {
    cg.InputNode: dict(shape="ellipse", style="filled", fillcolor="#fff2cc"),
    cg.ParameterNode: dict(shape="box", style="filled,rounded", fillcolor="#dae8fc"),
    cg.ConstantNode: dict(shape="plaintext", fontcolor="#555555"),
    cg.OperatorNode: dict(shape="ellipse", style="filled", fillcolor="#ffffff"),
}
_MODULE_BOX = dict(shape="box3d", style="filled", fillcolor="#e1d5e7")
# a backward pass's nodes and box (see BackwardPass): red, so the gradient's graph stands apart
_BACKWARD_NODE = dict(fillcolor="#f8cecc", color="#b85450")
_BACKWARD_BOX = dict(shape="box3d", style="filled", fillcolor="#f8cecc", color="#b85450")
_BACKWARD_CLUSTER = dict(style="rounded,filled", color="#b85450", fillcolor="#fdf3f2", fontcolor="#b85450")
_BACKWARD_EDGE = dict(color="#b85450")
# gradients (show_grads) in green (visual_labels.py); the node whose rule runs (backprop_steps) in orange
_RUNNING_NODE = dict(fillcolor="#ffe0a3", color="#d79b00", penwidth="3")
_RUNNING_EDGE = dict(color="#d79b00", penwidth="2", dir="back", fontcolor=_GRAD_FONT, fontsize="12")
MAX_STEPS = 60  # backprop_steps draws at most this many rules (one picture each)
HUB_EDGES = 8  # edges of a node with more than this many out- or in-edges do not constrain the layout
DOT_DPI, MAX_INCHES = 96, 10_000  # dot's PNG resolution; a height bound that never binds
_log = logging.getLogger(__name__)


def plot_cg(
    root,
    save_path=None,
    wait=0,
    title=None,
    view=False,
    format=None,
    depth="auto",
    rankdir="LR",
    max_nodes=MAX_NODES,
    timeout=60,
    max_width=None,
    show_grads=False,
    _running=None,
):
    """Render the graph behind `root` (a node, a ModuleGraph, or a tuple of nodes) and
    return the path of the image it wrote.

    save_path: where to write. Its extension picks the format (.png, .svg, .pdf, any
        format Graphviz knows). Without one (``"out/cg-simple"``, as the original
        zkynet wrote it) the image goes to ``save_path + ".png"`` (or ``"." + format``),
        and the returned path says so. An existing directory (or a path ending in
        "/") gets the image inside it, named after the title. Folders are created.
        Default: ``<tempdir>/zkynet/<title>.png``.
    wait: with `view`, seconds to pause after opening the viewer.
    title: caption of the picture (and default file name).
    view: open the image in the system viewer (off by default: works headless).
    format: image format when save_path has no extension (default "png").
    depth: draw module calls nested deeper than this as single boxes (0 = the
        top-level module is one box); None = every node; "auto" = the most detail
        that keeps the picture under ~40 shapes.
    max_nodes: the most shapes (nodes and boxes) drawn: a bigger picture (or one whose
        edges span so many ranks that laying it out is like drawing 25 x max_nodes
        shapes) is collapsed to the deepest depth that fits, with a warning; if even
        collapsing every module call does not fit (nodes made outside any module),
        PlotError. None: no limit.
    timeout: seconds dot may take to lay out and render (None: no limit); past it,
        PlotError with advice.
    rankdir: "LR" (inputs on the left) or "TB" (inputs on top: pictures taller than wide,
        which is how a narrow preview pane such as MLflow's shows them best).
    max_width: the widest a PNG may be, in pixels; a wider picture is scaled down to it
        (None: as laid out).
    show_grads: True to write each node's gradient (what `back()` computed: d output /
        d node, or the vector-Jacobian product for back(cotangent)) under its value, in
        green: a scalar as a number, a small array (up to 4 elements) in full, a bigger one
        as its shape and norm; a full Jacobian (back() of a tensor output) as
        ``jacobian[out shape + node shape]`` and its norm. `root` must then be the
        ModuleGraph that back() ran on (``result``, not ``result.root``: the gradients live
        on it); before back(), BackwardNotRunError says to call it. To draw other nodes with
        a graph's gradients (the gradient's own graph after back(create_graph=True):
        ``plot_cg(result.grad(x), show_grads=result)``), pass that ModuleGraph instead of
        True; or a dict {node: gradient}. Nodes without a gradient (constants) show none.
    """
    roots = (
        root.roots
        if isinstance(root, cg.ModuleGraph)
        else (tuple(root) if isinstance(root, (tuple, list)) else (root,))
    )
    roots = tuple(cg.as_node(r) for r in roots)
    grads = _gradients(root, show_grads)
    nodes = [n for n in cg.topological_order(roots) if not _empty_constant(n)]
    if depth == "auto":
        depth = _auto_depth(nodes)
    elif depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise PlotError(f"plot_cg: depth must be None, 'auto' or an int >= 0, got {depth!r}")
    if max_nodes is not None:
        depth = _bounded_depth(nodes, depth, max_nodes)
    save_path, format = _output(save_path, format, title, roots)

    size = {} if max_width is None else dict(size=f"{(max_width - 1) / DOT_DPI:.4f},{MAX_INCHES}")  # shrinks only;
    # dot rounds the scaled width up, hence the pixel taken off
    graph = graphviz.Digraph(
        format=format,
        graph_attr=dict(rankdir=rankdir, fontname="Helvetica", **size),
        node_attr=dict(fontname="Helvetica", fontsize="11"),
        edge_attr=dict(arrowsize="0.7"),
    )
    if title:
        graph.attr(label=title, labelloc="t", fontsize="16")
    _draw(graph, nodes, roots, depth, grads, _running)
    _render(graph.source, format, save_path, timeout, len(nodes))
    _log.info("plot_cg wrote %s", save_path)
    if view:
        graphviz.view(save_path)
        time.sleep(wait)
    return save_path


def _gradients(root, show_grads):
    """{node: gradient} to write in the picture (None: show_grads is off)."""
    if show_grads is False or show_grads is None:
        return None
    if isinstance(show_grads, Mapping):
        return dict(show_grads)
    if show_grads is True:
        if not isinstance(root, cg.ModuleGraph):
            raise PlotError(
                "plot_cg(show_grads=True) needs the ModuleGraph that back() ran on, where the gradients "
                f"live: pass `result` (what the module call returned), not a {type(root).__name__} such as "
                "result.root; to draw other nodes with its gradients, pass show_grads=result"
            )
        source = root
    elif isinstance(show_grads, cg.ModuleGraph):
        source = show_grads
    else:
        raise PlotError(
            f"plot_cg: show_grads must be True, False, a ModuleGraph or a dict {{node: gradient}}, got {show_grads!r}"
        )
    nodes = [n for n in source.nodes if n.requires_grad]
    try:
        return {n: source.grad(n) for n in nodes}
    except BackwardNotRunError:
        raise BackwardNotRunError(
            "plot_cg(show_grads=True) draws the gradients back() computed, and this graph has none yet: "
            "call back() on it first (result.back() for a scalar output, result.back(cotangent) for a "
            "tensor one), then plot_cg(result, show_grads=True)"
        ) from None


def backprop_steps(graph, cotangent=None, save_path=None, title=None, **options) -> Iterator[str]:
    """Draw `graph`'s backward pass step by step: yield the path of one picture per rule
    that runs, in the order back() runs them (a topological order, output first).

    The first picture shows the seed (d output / d output = 1, or `cotangent` for a
    tensor output). Each next one highlights, in orange, the node whose backward rule
    runs, writes on the edges to its inputs the cotangent the rule sends each of them
    (arrows pointing back), and under every node the cotangent it has gathered so far (in
    green, as in plot_cg(show_grads=True)). The last picture's cotangents are the gradients
    back() gives. `graph` is a ModuleGraph with one output; it need not have run back().

    save_path: a folder for the pictures (``step-00.png``, ``step-01.png``, ...; default
    ``<tempdir>/zkynet/backprop-<call id>``); `options` go to plot_cg (format="svg",
    rankdir="TB", ...). For small graphs: at most MAX_STEPS rules. A graph it cannot draw
    raises PlotError at once, before the first picture."""
    if not isinstance(graph, cg.ModuleGraph):
        raise PlotError(f"backprop_steps draws a ModuleGraph (what a module call returns), got {type(graph).__name__}")
    if isinstance(graph.root, tuple):
        raise PlotError(f"backprop_steps draws a graph with one output; this one has {len(graph.root)}")
    root = graph.root
    if cotangent is None:
        if root.shape != ():
            raise PlotError(
                f"backprop_steps: the output is shaped {tuple(root.shape)}: give the cotangent to start from "
                "(an array shaped like it), as for back(cotangent)"
            )
        seed = one(root.dtype)
    else:
        seed = cg.as_value(cotangent, "cotangent")
        if seed.shape != root.shape:
            raise PlotError(
                f"backprop_steps: the cotangent must be shaped like the output {tuple(root.shape)}, got "
                f"{tuple(seed.shape)}"
            )
    order = graph.nodes
    seeds = {root: seed}
    final = backprop(order, seeds)
    runs = [n for n in reversed(order) if n.inputs and n.requires_grad and n in final]  # each gets a cotangent
    if len(runs) > MAX_STEPS:
        raise PlotError(
            f"backprop_steps: this graph runs {len(runs)} backward rules, one picture each; it draws at most "
            f"{MAX_STEPS}. Draw a smaller model (plot_cg(result, show_grads=True) shows the end result of any size)"
        )
    folder = save_path or os.path.join(tempfile.gettempdir(), "zkynet", f"backprop-{graph.call_id}")
    extension = "." + (options.pop("format", None) or "png")
    options.setdefault("depth", None)
    label = title or f"backprop of {graph.module.functional_name}"
    seed_text = f"d {root.name} / d {root.name}" if cotangent is None else f"the cotangent given for {root.name}"
    return _steps(graph, seeds, runs, folder, extension, f"{label}\nthe seed: {seed_text}", label, options)


def _steps(graph, seeds, runs, folder, extension, first, label, options):
    root, order = graph.root, graph.nodes
    done = backprop([], seeds)  # the cotangents gathered so far: the seed alone
    yield plot_cg(root, save_path=os.path.join(folder, f"step-00{extension}"), title=first, show_grads=done, **options)
    position = {node: k for k, node in enumerate(order)}
    for step, node in enumerate(runs, start=1):
        after = backprop(order[position[node] :], seeds)  # back() over the nodes visited so far, this one last
        sent = {i: _difference(after[i], done.get(i)) for i in dict.fromkeys(node.inputs) if i in after}
        yield plot_cg(
            root,
            save_path=os.path.join(folder, f"step-{step:02d}{extension}"),
            title=f"{label}\nstep {step} of {len(runs)}: the rule of {node.name} sends cotangents to its inputs",
            show_grads=after,
            _running=(node, sent),
            **options,
        )
        done = after


def _difference(after: Any, before: Any) -> Any:
    return after if before is None else np.asarray(after) - np.asarray(before)


def _render(source, format, path, timeout, count):
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(
            "plot_cg needs Graphviz's 'dot' program: run setup.sh, or install it "
            "(apt-get install graphviz / brew install graphviz)"
        )
    try:
        done = subprocess.run(
            [dot, f"-T{format}", "-o", path], input=source.encode(), capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise PlotError(
            f"plot_cg: Graphviz's dot did not finish drawing {count} nodes within {timeout} s "
            f"(stopped). Draw fewer: depth=1 (or 0) collapses module calls into boxes, a smaller "
            "max_nodes collapses more; or give it longer: timeout=None"
        ) from None
    if done.returncode != 0:
        raise PlotError(f"plot_cg: dot failed to write {path!r}: {done.stderr.decode(errors='replace').strip()}")


def _output(save_path, format, title, roots):
    """(the image's path, its format), its folder created."""
    if save_path is not None and not isinstance(save_path, (str, os.PathLike)):
        raise PlotError(f"plot_cg: save_path must be a path (a str or pathlib.Path), got {type(save_path).__name__}")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", title or f"cg-call-{roots[0].call_id}").strip("_") or "graph"
    if format is not None and format not in graphviz.FORMATS:
        raise PlotError(f"plot_cg: unknown format {format!r}; Graphviz knows e.g. png, svg, pdf")
    if save_path is None:
        save_path = os.path.join(tempfile.gettempdir(), "zkynet", name)
    save_path = os.fspath(save_path)
    if os.path.isdir(save_path) or save_path.endswith(("/", os.sep)):
        save_path = os.path.join(save_path, name)  # a folder: the image goes inside it
    extension = os.path.splitext(save_path)[1].lstrip(".").lower()
    if extension in graphviz.FORMATS:
        format = format or extension
    else:  # no extension, or a dot that is part of the name ("cg.v2"): add one
        save_path = f"{save_path}.{format or 'png'}"
    if os.path.isdir(save_path):
        raise PlotError(
            f"plot_cg: {save_path!r} is a directory; give a file name (or the directory "
            "itself, to write the picture inside it)"
        )
    os.makedirs(os.path.dirname(os.path.abspath(save_path)), exist_ok=True)
    return save_path, format or "png"


def _empty_constant(node):
    """Size-0 constants (getitem's list of integer positions when there are none) say
    nothing worth drawing."""
    return isinstance(node, cg.ConstantNode) and node.value.size == 0


def _draw(graph, nodes, roots, depth, grads=None, running=None):
    chains: Chains = {}
    shapes = {node: _shape_of(node, depth, chains) for node in nodes}
    members: dict[ModuleCall | None, list[Shape]] = {}  # module call -> the shapes drawn directly inside it
    counts: dict[ModuleCall, int] = {}  # collapsed module call -> how many nodes it hides
    for node, shape in shapes.items():
        if isinstance(shape, cg.Node):  # the node itself
            members.setdefault(node.scope, []).append(node)
        else:
            counts[shape] = counts.get(shape, 0) + 1
    for box in counts:
        members.setdefault(box.parent, []).append(box)

    children: dict[ModuleCall | None, set[ModuleCall]] = {}
    for scope in members:
        chain = [None] + _ancestors(scope)
        for parent, child in itertools.pairwise(chain):
            children.setdefault(parent, set()).add(child)

    def ident(shape):
        return f"n{shape.id}" if isinstance(shape, cg.Node) else f"m{id(shape)}"

    backward: dict[ModuleCall | None, bool] = {}

    def is_backward(shape):
        scope = shape.scope if isinstance(shape, cg.Node) else shape
        if scope not in backward:
            backward[scope] = _in_backward_pass(scope)
        return backward[scope]

    def emit(target, scope):
        for shape in members.get(scope, ()):
            if isinstance(shape, cg.Node):
                style = dict(_STYLES[type(shape)])
                if is_backward(shape) and isinstance(shape, cg.OperatorNode):
                    style.update(_BACKWARD_NODE)
                if shape in roots:
                    style.update(penwidth="2.5")
                if running is not None and shape is running[0]:
                    style.update(_RUNNING_NODE)
                gradient = None if grads is None else grads.get(shape)
                target.node(ident(shape), _label(shape, gradient, shape in grads if grads else False), **style)
            else:
                kind = "backward pass" if isinstance(shape.module, BackwardPass) else type(shape.module).__name__
                box = _BACKWARD_BOX if is_backward(shape) else _MODULE_BOX
                target.node(ident(shape), f"{shape.name}\n{kind} · {counts[shape]} nodes", **box)
        for child in sorted(children.get(scope, ()), key=lambda s: s.path):
            with target.subgraph(name=f"cluster_{id(child)}") as cluster:
                cluster.attr(
                    label=child.name,
                    labeljust="l",
                    fontsize="11",
                    style="rounded" if child.depth == 0 else "rounded,dashed",
                    color="#444444" if child.depth == 0 else "#888888",
                )
                if isinstance(child.module, BackwardPass):
                    cluster.attr(**_BACKWARD_CLUSTER)
                emit(cluster, child)

    emit(graph, None)

    edges = _edges(nodes, shapes)
    fan_out: dict[Shape, int] = {}
    fan_in: dict[Shape, int] = {}
    for tail, head in edges:
        fan_out[tail] = fan_out.get(tail, 0) + 1
        fan_in[head] = fan_in.get(head, 0) + 1
    for tail, head in edges:
        style = dict(_BACKWARD_EDGE) if is_backward(head) else {}
        if running is not None and head is running[0] and tail in running[1]:
            style.update(_RUNNING_EDGE, label=f" {_compact(_format_value(_array(running[1][tail])))} ")
        if fan_out[tail] > HUB_EDGES or fan_in[head] > HUB_EDGES:  # a hub: ranking around it is what explodes
            graph.edge(ident(tail), ident(head), constraint="false", **style)
        else:
            graph.edge(ident(tail), ident(head), **style)


def _in_backward_pass(scope):
    """Whether module call `scope` is a backward pass (back(create_graph=True)) or inside one."""
    while scope is not None:
        if isinstance(scope.module, BackwardPass):
            return True
        scope = scope.parent
    return False
