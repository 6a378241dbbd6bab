"""The notebooks are stored with their outputs, and a fresh run reproduces them: every
notebook runs top to bottom on a fresh kernel and its outputs must match the stored ones
(numbers within notebooks.execute's tolerance, figures present; cells tagged `varies`
checked for their form), so stored outputs cannot drift from the code. After an intended
change: `python -m notebooks.execute <name>` stores the new outputs."""

import ast
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from notebooks import execute

NOTEBOOKS = execute.notebooks()
LIBRARY_IMPORTS = {"zkynet", "numpy", "jax", "matplotlib", "IPython"}  # and the standard library


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 11


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_fresh_run_reproduces_the_stored_outputs(path, tmp_path):
    stored = nbformat.read(path, as_version=4)
    fresh = execute.run(path, tmp_path)
    problems = execute.compare(stored, fresh)
    assert not problems, (
        f"{path.name}: a fresh run differs from the stored outputs:\n"
        + "\n".join(problems)
        + f"\nIf the change is intended, store the new outputs: python -m notebooks.execute {path.stem}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_are_stored_run_with_their_outputs(path):
    """Run top to bottom (execution counts 1, 2, 3, ...), without errors, every code cell
    with output, figures included; a `varies` cell says so in a comment, visible in any preview."""
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    hint = f"store the outputs: python -m notebooks.execute {path.stem}"
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), hint
    outputs = [o for c in cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], hint
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], "warnings in the outputs"
    for cell in cells:
        shows = ("show()", "Image(", "display(", "print(")
        if any(word in cell.source for word in shows):
            assert cell.outputs, f"no stored output for:\n{cell.source}\n({hint})"
        if "plt.show()" in cell.source or "Image(" in cell.source:
            assert any(set(o.get("data", {})) & set(execute.IMAGE_FORMATS) for o in cell.outputs), cell.source
        if execute.VARIES in cell.metadata.get("tags", []):
            assert cell.source.startswith("# varies:"), f"say why in its first line:\n{cell.source}"


def imported_packages(path):
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_library_notebooks_import_only_the_library():
    """Only the sweeps notebook drives the runner; the others teach zkynet itself, with
    numpy, jax, matplotlib and the standard library."""
    for path in NOTEBOOKS:
        packages = imported_packages(path) - set(sys.stdlib_module_names)
        if path.stem == "08_sweeps":
            assert "experiments" in packages
        else:
            assert packages <= LIBRARY_IMPORTS, f"{path.name} imports {sorted(packages - LIBRARY_IMPORTS)}"


# ------------------------------------------------------------- how outputs are compared


def notebook(*cells):
    """A notebook of code cells, each given as (outputs, tags)."""
    made = []
    for outputs, tags in cells:
        cell = new_code_cell("x = 1", outputs=outputs)
        if tags:
            cell.metadata["tags"] = tags
        made.append(cell)
    return new_notebook(cells=made)


def printed(text):
    return new_output("stream", name="stdout", text=text)


def shown(text, png="iVBORw0KGgo="):  # base64 of the PNG signature
    data = {"text/plain": text}
    if png is not None:
        data["image/png"] = png
    return new_output("display_data", data=data)


def differences(old, new, tags=None):
    return execute.compare(notebook((old, tags)), notebook((new, tags)))


def test_numbers_may_move_within_the_tolerance_and_no_further():
    assert differences([printed("accuracy 0.981\n")], [printed("accuracy 0.982\n")]) == []  # one printed unit
    assert differences([printed("loss 2.570938\n")], [printed("loss 2.571\n")]) == []  # rtol
    assert differences([printed("max difference 1.1e-16\n")], [printed("max difference 0.0e+00\n")]) == []  # atol
    moved = differences([printed("accuracy 0.981\n")], [printed("accuracy 0.975\n")])
    assert len(moved) == 1 and "0.981 became 0.975" in moved[0] and "tolerance" in moved[0]
    assert differences([printed("4 of 359 misread\n")], [printed("5 of 359 misread\n")])  # integers are exact
    assert differences([printed("(4, 2)")], [printed("(4, 3)")])


def test_words_and_kinds_of_output_must_be_the_same():
    assert differences([printed("lstm: 0.99\n")], [printed("gru: 0.99\n")])
    assert differences([printed("a\nb\n")], [printed("a\n"), printed("b\n")]) == []  # one stream, split by timing
    changed = differences([printed("a\n"), shown("<Figure>")], [printed("a\n")])
    assert "stored outputs" in changed[0] and "display_data image/png+text/plain" in changed[0]


def test_figures_must_be_present_but_pixels_may_differ():
    assert differences([shown("<Figure size 640x480 with 1 Axes>")], [shown("<Figure size 640x480 with 1 Axes>")]) == []
    gone = differences([shown("<Figure>")], [shown("<Figure>", png="bm90IGEgcG5n")])
    assert gone and "figure is missing" in gone[0]
    assert differences([shown("<Figure size 640x480 with 1 Axes>")], [shown("<Figure size 640x480 with 2 Axes>")])


def test_a_varies_cell_is_checked_for_its_form_only():
    old, new = printed("eager 8.0 ms/step: 9x faster\n"), printed("eager 12.5 ms/step: 14x faster\n")
    assert differences([old], [new]) and differences([old], [new], tags=["varies"]) == []
    assert differences([old], [printed("eager 12.5 s/step: 14x faster\n")], tags=["varies"])  # not its words
    assert differences([old], [old, shown("<Figure>")], tags=["varies"])  # nor its kinds of output


def test_an_error_in_the_fresh_run_is_reported():
    error = new_output("error", ename="ValueError", evalue="bad", traceback=[])
    assert differences([printed("a\n")], [printed("a\n"), error]) == ["code cell 1 (x = 1): ValueError: bad"]
