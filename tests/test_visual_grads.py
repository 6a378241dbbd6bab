"""Pictures that show gradients: plot_cg(result, show_grads=True) writes each node's
gradient beside its value (scalars as numbers, arrays as shape and norm, full Jacobians
marked so), refuses clearly before back() or without the graph, keeps working on the
gradient's own graph (back(create_graph=True)); backprop_steps draws back() one rule at a time."""

import re
from pathlib import Path

import numpy as np
import pytest

from zkynet.framework import cg, op
from zkynet.framework.errors import BackwardNotRunError, PlotError
from zkynet.models.fcn import Linear
from zkynet.models.toy import CompositeModel_NoWeightSharing_SameInputs, SimpleModel
from zkynet.visual import MAX_STEPS, backprop_steps, plot_cg

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GRAD_COLOUR, RUNNING_FILL = "#1b7837", "#ffe0a3"


def node_texts(svg):
    """{node title (n<id>): its text lines} of an SVG drawn by plot_cg."""
    found = {}
    for group in re.findall(r'<g id="node\d+" class="node">(.*?)</g>', svg, re.S):
        title = re.search(r"<title>(.*?)</title>", group).group(1)
        found[title] = [t.replace("&#45;", "-") for t in re.findall(r"<text[^>]*>(.*?)</text>", group)]
    return found


def svg(root, tmp_path, name="g.svg", **options):
    return Path(plot_cg(root, save_path=str(tmp_path / name), **options)).read_text()


def lines_of(texts, node):
    return texts[f"n{node.id}"]


def test_gradients_are_written_beside_values_after_back(tmp_path):
    m = SimpleModel()
    result = m(3)
    result.back()
    texts = node_texts(svg(result, tmp_path, show_grads=True))
    nodes = {n.name: n for n in result.nodes}
    assert lines_of(texts, nodes["x"]) == ["x", "3", "grad 33"]
    assert lines_of(texts, nodes["w"]) == ["w", "1", "grad 9"]
    assert lines_of(texts, nodes["square"])[-1] == "grad 4" and lines_of(texts, nodes["add"])[-1] == "grad 9"
    assert lines_of(texts, nodes["mult"])[-1] == "grad 1"
    assert GRAD_COLOUR in svg(result, tmp_path, show_grads=True)
    assert Path(plot_cg(result, show_grads=True, save_path=str(tmp_path / "g.png"))).read_bytes()[:8] == PNG_MAGIC


def test_without_show_grads_the_picture_is_unchanged(tmp_path):
    result = SimpleModel()(3)
    result.back()
    assert "grad" not in svg(result, tmp_path) and svg(result, tmp_path) == svg(result, tmp_path, show_grads=False)


def test_a_shared_input_shows_its_accumulated_gradient(tmp_path):
    model = CompositeModel_NoWeightSharing_SameInputs()
    result = model(3)
    result.back()
    texts = node_texts(svg(result, tmp_path, show_grads=True))
    x1 = result.node(model.input("x1"))
    assert lines_of(texts, x1)[-1] == f"grad {int(result.grad(model.input('x1')))}" == "grad 66"


def test_arrays_show_shape_and_norm_small_ones_in_full(tmp_path):
    layer = Linear(3, 5, key=0)
    result = layer(np.ones((4, 3), np.float32))
    result.back(np.ones((4, 5), np.float32))
    texts = node_texts(svg(result, tmp_path, show_grads=True))
    W = result.node(layer.param("W"))
    norm = np.linalg.norm(np.asarray(result.grad(layer.param("W"))))
    assert lines_of(texts, W)[-1] == f"grad float32[3, 5] norm {norm:.4g}"
    small = SimpleModel()(np.array([3.0, 4.0, 5.0]))
    small.back(np.array([1.0, 0.0, 2.0]))
    x = next(n for n in small.nodes if n.name == "x")
    assert lines_of(node_texts(svg(small, tmp_path, show_grads=True)), x)[-1] == "grad [33., 0., 170.]"


def test_a_full_jacobian_is_called_one(tmp_path):
    result = SimpleModel()(np.array([3.0, 4.0, 5.0]))
    result.back()  # tensor output, no cotangent: grad() is the Jacobian
    texts = node_texts(svg(result, tmp_path, show_grads=True))
    x = next(n for n in result.nodes if n.name == "x")
    norm = np.linalg.norm(np.asarray(result.grad(x)))
    assert lines_of(texts, x)[-1] == f"jacobian float32[3, 3] norm {norm:.4g}"


def test_before_back_it_says_to_call_back_first(tmp_path):
    result = SimpleModel()(3)
    with pytest.raises(BackwardNotRunError, match=r"call back\(\) on it first"):
        plot_cg(result, show_grads=True, save_path=str(tmp_path / "g.png"))
    assert not (tmp_path / "g.png").exists()


def test_a_bare_node_says_to_pass_the_graph(tmp_path):
    result = SimpleModel()(3)
    result.back()
    with pytest.raises(PlotError, match=r"pass `result`.*not a OperatorNode"):
        plot_cg(result.root, show_grads=True)
    with pytest.raises(PlotError, match="show_grads must be"):
        plot_cg(result, show_grads="yes")
    texts = node_texts(svg(result.root, tmp_path, show_grads=result))  # the node, with the graph's gradients
    assert lines_of(texts, result.root)[-1] == "grad 1"


def test_the_gradient_graph_draws_with_gradients_forward_and_backward_apart(tmp_path):
    m = SimpleModel()
    graph = m(3.0)
    graph.back(create_graph=True)
    slope = graph.grad(m.input("x"))  # a node of the backward pass
    assert isinstance(slope, cg.Node)
    picture = svg((graph.root, slope), tmp_path, show_grads=graph)
    texts = node_texts(picture)
    x = graph.node(m.input("x"))
    assert lines_of(texts, x)[-1] == "grad 33"  # the gradient node's value
    backward = [n for n in cg.topological_order([slope]) if n not in set(graph.nodes)]
    assert backward and all(not any(t.startswith("grad") for t in lines_of(texts, n)) for n in backward)
    assert 'fill="#f8cecc"' in picture and "back(mult)" in picture  # the backward pass, still red and boxed
    assert node_texts(svg(graph, tmp_path, "f.svg", show_grads=True))[f"n{x.id}"][-1] == "grad 33"


def test_backprop_steps_draws_one_picture_per_rule_ending_with_back_s_gradients(tmp_path):
    m = SimpleModel()
    graph = m(3)
    pictures = list(backprop_steps(graph, save_path=str(tmp_path / "steps"), format="svg"))
    assert [Path(p).name for p in pictures] == [f"step-0{i}.svg" for i in range(4)]  # the seed, mult, square, add
    drawings = [Path(p).read_text() for p in pictures]
    texts = [node_texts(d) for d in drawings]
    assert [t[-1] for t in texts[0].values() if t[-1].startswith("grad")] == ["grad 1"]  # the seed alone
    names = {f"n{n.id}": n.name for n in graph.nodes}
    running = [[names[k] for k in t if RUNNING_FILL in _node_svg(d, k)] for d, t in zip(drawings, texts, strict=True)]
    assert running == [[], ["mult"], ["square"], ["add"]]  # one rule per picture, in reverse topological order
    graph.back()
    final = {names[k]: t[-1] for k, t in texts[-1].items()}
    assert final == {n.name: f"grad {int(graph.grad(n))}" for n in graph.nodes}  # what back() gives
    assert "> 24 <" in drawings[2] and "step 2 of 3" in drawings[2]  # square's rule sends 2x * 4 = 24 to x
    png = next(backprop_steps(m(3), save_path=str(tmp_path / "png")))
    assert Path(png).read_bytes()[:8] == PNG_MAGIC


def _node_svg(svg_text, title):
    return re.search(rf"<title>{title}</title>(.*?)</g>", svg_text, re.S).group(1)


def test_backprop_steps_of_a_tensor_output_needs_its_cotangent(tmp_path):
    m = SimpleModel()
    with pytest.raises(PlotError, match="give the cotangent"):
        backprop_steps(m(np.array([3.0, 4.0])))
    with pytest.raises(PlotError, match="shaped like the output"):
        backprop_steps(m(np.array([3.0, 4.0])), cotangent=np.ones(3))
    pictures = list(backprop_steps(m(np.array([3.0, 4.0])), np.array([1.0, 2.0]), str(tmp_path), format="svg"))
    graph = m(np.array([3.0, 4.0]))
    graph.back(np.array([1.0, 2.0]))
    x = texts_by_name(Path(pictures[-1]).read_text())["x"]
    assert x[-1] == f"grad [{', '.join(f'{v:g}.' for v in np.asarray(graph.grad(m.input('x'))))}]"


def texts_by_name(svg_text):
    return {lines[0]: lines for lines in node_texts(svg_text).values()}


def test_backprop_steps_refuses_what_it_cannot_draw():
    with pytest.raises(PlotError, match="ModuleGraph"):
        backprop_steps(SimpleModel()(3).root)

    class Two(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),))

        def call(self, x):
            return x * 2, x * 3

    with pytest.raises(PlotError, match="one output"):
        backprop_steps(Two()(1.0))

    class Long(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),))

        def call(self, x):
            for _ in range(MAX_STEPS + 1):
                x = op.tanh(x)
            return x

    with pytest.raises(PlotError, match="at most"):
        backprop_steps(Long()(1.0))
