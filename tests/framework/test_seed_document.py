"""The user's original document (a verbatim copy in tests/fixtures) runs as written:
its Python blocks in order, in one namespace, and each expression followed by a
``# value`` comment evaluates to that value."""

import ast
import re
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

SEED = Path(__file__).parents[1] / "fixtures" / "seed-README.md"
PLOT_TITLES = [
    "simpel model",
    "NoWeightSharing_DifferentInputs",
    "test_visualize_CompositeModel_WeightSharing_**Different**Inputs",
    "test_visualize_CompositeModel_**No**WeightSharing_**Same**Inputs",
    "test_visualize_CompositeModel_WeightSharing_**Same**Inputs",
]


def python_blocks(markdown):
    return re.findall(r"```python\n(.*?)```", markdown, re.S)


def expected_output(statement, lines):
    """The text of a `# value` line right after an expression statement, else None."""
    following = lines[statement.end_lineno] if statement.end_lineno < len(lines) else ""
    if isinstance(statement, ast.Expr) and following.strip().startswith("#"):
        return following.strip()[1:].strip()
    return None


@pytest.fixture
def plot_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / "zkynet"


def test_seed_examples_run_as_written_and_print_what_they_say(plot_dir):
    namespace = {}
    checked = []
    for block in python_blocks(SEED.read_text()):
        source = textwrap.dedent(block)  # some blocks are indented under a list item
        for statement in ast.parse(source).body:
            code = ast.Module(body=[statement], type_ignores=[])
            text = expected_output(statement, source.splitlines())
            if text is not None:
                value = eval(compile(ast.Expression(statement.value), "seed", "eval"), namespace)
                np.testing.assert_array_equal(np.asarray(value), eval(text, {"array": np.array}))
                checked.append(text)
            else:
                with warnings.catch_warnings():  # m(3, 4) on a one-input model warns
                    warnings.simplefilter("ignore")
                    exec(compile(code, "seed", "exec"), namespace)
    assert checked == ["36", "array([ 36,  80, 150])", "9", "33"]
    assert sorted(p.name for p in plot_dir.glob("*.png")) == sorted(
        re.sub(r"[^A-Za-z0-9_.-]+", "_", t).strip("_") + ".png" for t in PLOT_TITLES
    )
    assert all(p.stat().st_size > 1000 for p in plot_dir.glob("*.png"))
    assert "Multiply" in namespace  # the custom operator block defined its class
