"""Lint, format and types are part of the suite: `ruff check .`, `ruff format --check .`
and `mypy` pass on the whole project, as pre-commit runs them (.pre-commit-config.yaml).
What they check is configured in pyproject.toml ([tool.ruff], [tool.mypy]), not here."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

COMMANDS = {
    "ruff-check": ["ruff", "check", "--no-fix", "."],
    "ruff-format": ["ruff", "format", "--check", "."],
    "mypy": ["mypy"],  # pyproject.toml's [tool.mypy] says what to check
}


def run(command):
    """The tool as the environment's Python runs it, from the project root."""
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.parametrize("name", ["ruff-check", "ruff-format", pytest.param("mypy", marks=pytest.mark.slow)], ids=str)
def test_the_project_passes(name):
    result = run(COMMANDS[name])
    if result.returncode != 0:  # the tool's own report, not a repr of the process
        pytest.fail(f"$ {' '.join(COMMANDS[name])}\n{result.stdout}{result.stderr}", pytrace=False)


def test_pre_commit_runs_the_same_commands():
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    for command in COMMANDS.values():
        assert " ".join(command[:2] if command[0] == "ruff" else command) in config
