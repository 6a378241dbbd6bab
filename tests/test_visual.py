"""plot_cg draws real pictures: PNG by default, SVG on request, clusters per module
call, shared nodes drawn once, big models collapsed to a readable depth; graphs dot
cannot lay out quickly are collapsed or refused with what to do, dot is stopped at a
timeout, and save paths (folders, names without extension, taken names) work."""

import re
import time
import warnings
from pathlib import Path

import jax.numpy as jnp
import pytest

from zkynet.framework import cg, op
from zkynet.framework.errors import PlotError
from zkynet.models.toy import (
    CompositeModel_NoWeightSharing_DifferentInputs,
    CompositeModel_NoWeightSharing_SameInputs,
    CompositeModel_WeightSharing_DifferentInputs,
    CompositeModel_WeightSharing_SameInputs,
    SimpleModel,
)
from zkynet.visual import plot_cg

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CASES = [  # model, inputs, input nodes, w nodes, out-edges of the shared input
    (CompositeModel_NoWeightSharing_DifferentInputs, (3, 4), 2, 2, 2),
    (CompositeModel_WeightSharing_DifferentInputs, (3, 4), 2, 1, 2),
    (CompositeModel_NoWeightSharing_SameInputs, (3,), 1, 2, 4),
    (CompositeModel_WeightSharing_SameInputs, (3,), 1, 1, 4),
]


def svg_of(root, tmp_path, **kwargs):
    path = plot_cg(root, save_path=str(tmp_path / "graph.svg"), **kwargs)
    return open(path).read()


def node_ids_labelled(svg, label):
    """SVG ids of graph nodes whose first text line is `label`."""
    found = []
    for group in re.findall(r'<g id="node\d+" class="node">(.*?)</g>', svg, re.S):
        title = re.search(r"<title>(.*?)</title>", group).group(1)
        texts = re.findall(r"<text[^>]*>(.*?)</text>", group)
        if texts and texts[0] == label:
            found.append(title)
    return found


def edges_from(svg, node_id):
    return re.findall(rf"<title>{node_id}&#45;&gt;(\w+)</title>", svg)


@pytest.mark.parametrize("model, inputs, n_inputs, n_weights, shared_out_edges", CASES)
def test_composite_cases_render_to_png_with_shared_nodes_once(
    tmp_path, model, inputs, n_inputs, n_weights, shared_out_edges
):
    result = model()(*inputs)
    path = plot_cg(result.root, save_path=str(tmp_path / f"{model.__name__}.png"), title=model.__name__)
    data = Path(path).read_bytes()
    assert path.endswith(".png") and data.startswith(PNG_MAGIC) and len(data) > 5000

    svg = svg_of(result.root, tmp_path)
    inputs_drawn = node_ids_labelled(svg, "x1") + node_ids_labelled(svg, "x2")
    assert len(inputs_drawn) == n_inputs
    assert len(node_ids_labelled(svg, "w")) == n_weights
    assert len(edges_from(svg, inputs_drawn[0])) == shared_out_edges
    clusters = re.findall(r'<g id="clust\d+" class="cluster">.*?<text[^>]*>(.*?)</text>', svg, re.S)
    assert model.__name__ in clusters and "m1" in clusters


def test_default_path_format_and_title(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = plot_cg(SimpleModel()(3).root, title="my graph: v1", wait=2)  # wait only applies with view
    assert path == str(tmp_path / "zkynet" / "my_graph_v1.png")
    assert Path(path).read_bytes().startswith(PNG_MAGIC)
    svg_path = plot_cg(SimpleModel()(3), save_path=str(tmp_path / "g"), format="svg")
    assert svg_path.endswith("g.svg") and "<svg" in Path(svg_path).read_text()


class Block(cg.Module):
    def __init__(self, width):
        super().__init__(
            inputs=(cg.Variable("h"),), params=(cg.Parameter("W", jnp.eye(width)), cg.Parameter("b", jnp.zeros(width)))
        )

    def call(self, h):
        return op.relu(h @ self.param("W") + self.param("b")) + h


class Deep(cg.Module):
    def __init__(self, depth=40, width=4):
        super().__init__(inputs=(cg.Variable("x"),))
        self.blocks = [Block(width) for _ in range(depth)]

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return op.sum(x)


def test_collapse_to_module_depth(tmp_path):
    result = Deep()(jnp.ones(4))
    assert len(result.nodes) > 200
    collapsed = svg_of(result, tmp_path, depth=1)
    boxes = re.findall(r"<text[^>]*>(blocks\.\d+)</text>", collapsed)
    assert len(boxes) == 40 and "Block · 6 nodes" in collapsed
    assert len(node_ids_labelled(collapsed, "W")) == 0  # hidden inside the boxes
    full = svg_of(result, tmp_path, depth=None, max_nodes=300)  # 242 shapes: above the default limit
    assert len(node_ids_labelled(full, "W")) == 40
    with pytest.warns(
        UserWarning,
        match=r"depth=None takes 242 shapes, more than max_nodes=150.*"
        r"collapsed to depth=1",
    ):
        bounded = svg_of(result, tmp_path, depth=None)
    assert len(node_ids_labelled(bounded, "W")) == 0 and len(re.findall(r"(blocks\.\d+)</text>", bounded)) == 40
    auto = svg_of(result, tmp_path)  # "auto": too many nodes, so it collapses
    assert len(re.findall(r'class="node"', auto)) <= 40


def test_collapsed_picture_of_a_big_model_renders(tmp_path):
    path = plot_cg(Deep(depth=8)(jnp.ones(4)), save_path=str(tmp_path / "deep.png"), depth=1, title="Deep, collapsed")
    assert Path(path).read_bytes().startswith(PNG_MAGIC)


def test_plot_of_free_operators(tmp_path):
    node = op.exp(op.add(jnp.ones((3, 5)), 2.0))  # no module call: no cluster
    svg = svg_of(node, tmp_path)
    assert "float32[3, 5]" in svg and "cluster" not in svg


def test_a_transformer_collapses_to_its_blocks(tmp_path):
    from zkynet.models.transformer import TransformerLM

    model = TransformerLM(16, dim=16, heads=2, layers=3, mlp=32, max_length=8)
    graph = model(jnp.ones((2, 8), jnp.int32))
    assert len(graph.nodes) > 100  # big: depth=1 draws it in under 20 shapes
    svg = svg_of(graph, tmp_path, depth=1)
    boxes = set(re.findall(r"<text[^>]*>(embed|blocks\.\d|norm|head)</text>", svg))
    assert boxes == {"embed", "blocks.0", "blocks.1", "blocks.2", "norm", "head"}
    assert len(re.findall(r'class="node"', svg)) < 20
    path = plot_cg(graph, save_path=str(tmp_path / "transformer.png"), depth=1, title="TransformerLM")
    assert Path(path).read_bytes().startswith(PNG_MAGIC)


def test_list_layers_are_boxed_by_their_names(tmp_path):
    from zkynet.models.fcn import MLP

    svg = svg_of(MLP([4, 8, 8, 2], key=0)(jnp.ones((1, 4))), tmp_path, depth=None)
    clusters = re.findall(r'<g id="clust\d+" class="cluster">.*?<text[^>]*>(.*?)</text>', svg, re.S)
    assert sorted(clusters) == ["MLP", "layers.0", "layers.1", "layers.2", "relu", "relu#2"]


def png_size(path):
    """(width, height) from a PNG's header."""
    header = Path(path).read_bytes()[:24]
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_top_to_bottom_pictures_fit_a_narrow_preview(tmp_path):
    from zkynet.models.fcn import MLP

    graph = MLP([64, 32, 32, 10], key=0)(jnp.ones((2, 64)))
    wide = png_size(plot_cg(graph, save_path=str(tmp_path / "lr.png")))
    tall = png_size(plot_cg(graph, save_path=str(tmp_path / "tb.png"), rankdir="TB"))
    assert wide[0] > wide[1] and tall[1] > tall[0]  # a chain of layers: along the rank direction
    capped = png_size(plot_cg(graph, save_path=str(tmp_path / "capped.png"), rankdir="TB", max_width=tall[0] // 2))
    assert capped[0] <= tall[0] // 2 and abs(capped[1] / capped[0] - tall[1] / tall[0]) < 0.05  # scaled, not cut


# ----------------------------------------------------------------------------- hostile: plot_cg


class SharedChain(cg.Module):
    """A chain whose every step uses the same parameter: what took dot 480 s."""

    def __init__(self, steps, shared=1):
        super().__init__(inputs=(cg.Variable("x"),), params=tuple(cg.Parameter(f"w{i}", 0.5) for i in range(shared)))
        self.steps, self.shared = steps, shared

    def call(self, x):
        for i in range(self.steps):
            x = op.tanh(x * self.param(f"w{i % self.shared}"))
        return x


@pytest.mark.parametrize("steps, shared", [(150, 1), (150, 2)])
def test_a_big_shared_parameter_graph_is_collapsed_quickly_and_says_so(tmp_path, steps, shared):
    graph = SharedChain(steps, shared)(1.0)
    assert len(graph.nodes) > 300
    start = time.perf_counter()
    with pytest.warns(
        UserWarning,
        match=r"depth=None takes \d+ shapes, more than max_nodes=150.*collapsed to "
        r"depth=0",
    ):
        path = plot_cg(graph, save_path=str(tmp_path / "big.png"), depth=None)
    assert time.perf_counter() - start < 10
    assert Path(path).read_bytes().startswith(b"\x89PNG")


def test_long_edges_count_too_not_only_nodes(tmp_path):
    """74 steps sharing one parameter: 150 shapes (under max_nodes), but each use of the
    parameter is an edge spanning up to 150 ranks; laying that out is what is slow."""
    with pytest.warns(UserWarning, match=r"edges span many ranks .*about \d+ units of layout work"):
        plot_cg(SharedChain(74)(1.0), save_path=str(tmp_path / "long.svg"), depth=None)


def test_nodes_outside_any_module_cannot_collapse_so_it_refuses(tmp_path):
    x = jnp.ones(2)
    for _ in range(200):
        x = op.tanh(x)
    with pytest.raises(
        PlotError,
        match=r"201 shapes, more than max_nodes=150, and 201 of its nodes were made "
        r"outside any module call.*Build the computation inside a cg.Module",
    ):
        plot_cg(x, save_path=str(tmp_path / "free.png"))


def test_dot_is_stopped_at_the_timeout(tmp_path):
    with pytest.raises(PlotError, match=r"dot did not finish drawing \d+ nodes within 0.01 s.*depth=1"):
        plot_cg(SharedChain(60, 2)(1.0), save_path=str(tmp_path / "slow.png"), depth=None, max_nodes=None, timeout=0.01)


def test_save_paths(tmp_path):
    graph = SimpleModel()(3)
    folder = tmp_path / "pictures"
    folder.mkdir()
    assert plot_cg(graph, save_path=str(folder), title="f(x)") == str(folder / "f_x.png")  # inside the folder
    assert plot_cg(graph, save_path=str(tmp_path / "new") + "/") == str(
        tmp_path / "new" / f"cg-call-{graph.call_id}.png"
    )
    assert plot_cg(graph, save_path=str(tmp_path / "out" / "cg-simple")) == str(tmp_path / "out" / "cg-simple.png")
    assert plot_cg(graph, save_path=str(tmp_path / "cg.v2")) == str(tmp_path / "cg.v2.png")  # not a format
    assert plot_cg(graph, save_path=tmp_path / "g.svg").endswith("g.svg")  # a pathlib.Path
    for name in ["f_x.png"]:
        assert (folder / name).read_bytes().startswith(b"\x89PNG")
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(PlotError, match=re.escape("taken.png' is a directory")):
        plot_cg(graph, save_path=str(tmp_path / "taken"))
    with pytest.raises(PlotError, match="unknown format 'jpeg2'"):
        plot_cg(graph, save_path=str(tmp_path / "g"), format="jpeg2")
    with pytest.raises(PlotError, match="depth must be None, 'auto' or an int"):
        plot_cg(graph, save_path=str(tmp_path / "g.png"), depth=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # small graphs draw as asked, silently
        plot_cg(graph, save_path=str(tmp_path / "g.png"), depth=None)
