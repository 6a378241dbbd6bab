"""The public API's type hints hold: mypy finds no error in the typed modules."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
TYPED = [
    "zkynet/framework",
    "zkynet/training",
    "zkynet/tasks.py",
    "zkynet/gradcheck.py",
    "zkynet/optim.py",
    "zkynet/losses.py",
    "zkynet/checkpoint.py",
    "zkynet/data",
]


def test_mypy_finds_no_error_in_the_typed_modules(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            *TYPED,
            "--ignore-missing-imports",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
