"""The exercises check themselves (zkynet.exercises, notebooks/11_exercises.ipynb): a right
answer passes, a planted wrong one is caught with which element, its number and the expected
one, and a cell run before anything was written says what to write, not a traceback. The
answers live in tests/exercise_answers.py, never in the notebook."""

import ast
import inspect
from pathlib import Path

import nbformat
import pytest

from tests import exercise_answers
from tests.exercise_answers import RIGHT, WRONG
from zkynet import exercises

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "11_exercises.ipynb"
CASES = [(name, wrong, words) for name, mistakes in WRONG.items() for wrong, words in mistakes]


def test_every_exercise_has_an_answer_and_mistakes_to_catch():
    assert set(RIGHT) == set(WRONG) == set(exercises.EXERCISES)


@pytest.mark.parametrize("name", list(RIGHT))
def test_a_right_answer_passes(name):
    verdict = exercises.check(name, RIGHT[name])
    assert verdict.passed, verdict.message
    assert verdict.message.startswith(f"✓ {RIGHT[name].__name__} passes")


@pytest.mark.parametrize("name, wrong, words", CASES, ids=[c[1].__name__ for c in CASES])
def test_a_wrong_answer_is_caught_and_said_what_is_wrong(name, wrong, words):
    verdict = exercises.check(name, wrong)
    assert verdict.status == "wrong" and not verdict.passed
    assert verdict.message.startswith(f"✗ {wrong.__name__}") and words in verdict.message, verdict.message
    if "gradient with respect to" in words or "forward pass" in words:  # gradcheck found it: the element, both values
        assert " at " in verdict.message and "yours " in verdict.message and "expected " in verdict.message
        assert "Traceback" not in verdict.message


def test_the_element_and_both_numbers_are_the_ones_gradcheck_found():
    verdict = exercises.check("softplus", exercise_answers.SoftplusWrongForward)
    assert "wrong at output[" in verdict.message  # which element
    message = verdict.message.split("yours ")[1]
    ours, expected = float(message.split(",")[0]), float(message.split("expected ")[1].split(" ")[0])
    assert ours != pytest.approx(expected)


def test_code_that_fails_says_the_error_and_the_line_not_a_traceback():
    class Softplus(exercise_answers.Softplus):
        def call(self, x):
            import jax.numpy as jnp

            return jnp.log1p(jnp.exp(x))  # a node, not x.value

    verdict = exercises.check("softplus", Softplus)
    assert verdict.status == "wrong" and "Traceback" not in verdict.message
    assert "jnp.log1p(jnp.exp(x))" in verdict.message and "use x.value" in verdict.message


def test_an_unknown_exercise_names_the_exercises():
    with pytest.raises(KeyError, match="softplus"):
        exercises.check("softmax", RIGHT["softplus"])


def notebook_cells():
    return [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]


def run_cells(cells, answers=None):
    """Run the notebook's code cells in one namespace, in this process; the value of each
    cell's last expression (what the notebook shows). `answers` {class name: class}: the
    exercise cells defining those classes run their answers' source instead."""
    namespace: dict = {}
    shown = []
    for cell in cells:
        source = cell.source
        if answers and "exercise" in cell.metadata.get("tags", []):
            name = next(n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef))
            source = inspect.getsource(answers[name])
        tree = ast.parse(source)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, str(NOTEBOOK), "exec"), namespace)
        shown.append(eval(compile(ast.Expression(last.value), str(NOTEBOOK), "eval"), namespace) if last else None)
    return shown


def test_the_notebook_has_no_answers_and_its_checks_say_what_to_write():
    cells = notebook_cells()
    exercise_cells = [c for c in cells if "exercise" in c.metadata.get("tags", [])]
    assert len(exercise_cells) == len(exercises.EXERCISES)
    for cell in exercise_cells:  # each method of each exercise is a stub
        tree = ast.parse(cell.source)
        for method in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            body = [s for s in method.body if not isinstance(s, ast.Expr)]  # docstrings aside
            assert (method.name == "__init__" and "super().__init__" in ast.unparse(method)) or (
                len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0])
            ), f"{method.name} in\n{cell.source}"
    verdicts = [v for v in run_cells(cells) if isinstance(v, exercises.Verdict)]
    assert [v.status for v in verdicts] == ["todo"] * len(exercises.EXERCISES)
    for verdict in verdicts:
        assert "What to write:" in verdict.message and "Traceback" not in verdict.message


@pytest.mark.slow
def test_the_notebook_with_the_answers_filled_in_passes_every_check():
    answers = {cls.__name__: cls for cls in RIGHT.values()}
    verdicts = [v for v in run_cells(notebook_cells(), answers) if isinstance(v, exercises.Verdict)]
    assert len(verdicts) == len(exercises.EXERCISES)
    assert all(v.passed for v in verdicts), [v.message for v in verdicts]
