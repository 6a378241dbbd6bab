"""plot_cg draws the gradient's own graph (back(create_graph=True)): the backward pass's
nodes in a red box of their own, back(<output>), apart from the forward nodes they read."""

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from tests.framework.test_create_graph import Critic, GradientPenalty
from zkynet.framework import cg, op
from zkynet.models.fcn import Linear
from zkynet.visual import plot_cg

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BACKWARD_FILL, FORWARD_FILL = "#f8cecc", "#ffffff"


class Tiny(cg.Module):
    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"),))
        self.hidden = Linear(2, 3, key=0)
        self.out = Linear(3, 1, key=1)

    def call(self, x):
        return op.sum(self.out(op.tanh(self.hidden(x))))


def clusters(svg):
    """{label: (fill, stroke, the titles of the nodes drawn inside its outline)} of the SVG's
    clusters; a node is inside when its label's position is."""
    labels = {}
    for group in re.findall(r'<g id="node\d+" class="node">(.*?)</g>', svg, re.S):
        title = re.search(r"<title>(\w+)</title>", group).group(1)
        x, y = re.search(r'<text[^>]* x="([-\d.]+)" y="([-\d.]+)"', group).groups()
        labels[title] = (float(x), float(y))
    found = {}
    for group in re.findall(r'<g id="clust\d+" class="cluster">(.*?)</g>', svg, re.S):
        fill, stroke, outline = re.search(r'<path fill="([^"]+)" stroke="([^"]+)"[^>]* d="([^"]+)"', group).groups()
        numbers = [float(v) for v in re.findall(r"[-\d.]+", outline)]
        xs, ys = numbers[0::2], numbers[1::2]
        label = re.search(r"<text[^>]*>(.*?)</text>", group).group(1)
        inside = [t for t, (x, y) in labels.items() if min(xs) <= x <= max(xs) and min(ys) <= y <= max(ys)]
        found[label] = (fill, stroke, inside)
    return found


def fills(svg):
    """{node title: fill colour} of the SVG's ellipse nodes."""
    return dict(re.findall(r'<title>(n\d+)</title>\s*<ellipse fill="([^"]+)"', svg))


def test_the_gradient_graph_draws_forward_and_backward_apart(tmp_path):
    model = Tiny()
    result = model(np.ones((1, 2), np.float32))
    result.back(create_graph=True)
    gradient = result.grad(model.hidden.param("W"))
    svg = Path(plot_cg(gradient, save_path=str(tmp_path / "grad.svg"), depth=None)).read_text()

    boxes = clusters(svg)
    assert "back(sum)" in boxes and "Tiny" in boxes
    fill, stroke, inside = boxes["back(sum)"]
    assert (fill, stroke) == ("#fdf3f2", "#b85450")
    backward = {n for n in cg.topological_order([gradient]) if n.scope is not None and n.scope.name == "back(sum)"}
    assert f"n{gradient.id}" in inside and {f"n{n.id}" for n in backward} <= set(inside)
    colours = fills(svg)
    operators = [n for n in backward if isinstance(n, cg.OperatorNode)]
    assert operators and all(colours[f"n{n.id}"] == BACKWARD_FILL for n in operators)
    tanh = next(n for n in result.nodes if n.name == "tanh")  # read by the backward pass, drawn forward
    assert colours[f"n{tanh.id}"] == FORWARD_FILL and f"n{tanh.id}" not in inside
    assert 'stroke="#b85450"' in svg.split(f"<title>n{tanh.id}&#45;&gt;")[1].split("</g>")[0]  # edge into back

    png = plot_cg(gradient, save_path=str(tmp_path / "grad.png"), title="dL/dW: forward and back(sum)")
    assert Path(png).read_bytes().startswith(PNG_MAGIC)


def test_a_backward_pass_inside_a_module_call_is_its_box_and_collapses(tmp_path):
    rng = np.random.default_rng(0)
    real, fake = (jnp.asarray(rng.normal(size=(3, 4)).astype(np.float32)) for _ in range(2))
    graph = GradientPenalty(Critic())(real, fake, jnp.full((3, 1), 0.5, jnp.float32))
    backward = [n for n in graph.nodes if n.scope is not None and n.scope.name.startswith("back(")]
    assert backward and all(n.path.startswith("wgan_gp/back(") for n in backward)  # inside the objective's call

    svg = Path(plot_cg(graph, save_path=str(tmp_path / "gp.svg"), depth=1)).read_text()
    assert re.search(r"back\(sum\)</text>\s*<text[^>]*>backward pass · \d+ nodes</text>", svg)
    assert 'fill="#f8cecc" stroke="#b85450"' in svg  # the collapsed backward pass: a red box
