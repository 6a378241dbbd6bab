"""Importing zkynet or experiments (any module of them) changes no process-wide state: the
environment, sys.path, the root logger and its handlers, matplotlib's backend, signal
handlers, the working directory. The runner sets what it needs in its entry point."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

SCRIPT = r"""
import importlib, logging, os, pkgutil, signal, sys

def state():
    return {
        "environ": dict(os.environ),
        "sys.path": list(sys.path),
        "cwd": os.getcwd(),
        "root logger": (logging.getLogger().level, list(logging.getLogger().handlers)),
        "signals": {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)},
        "matplotlib backend": sys.modules["matplotlib"].get_backend() if "matplotlib" in sys.modules else None,
    }

import matplotlib, mlflow, ray, hydra, jax  # third-party imports first: their own effects are not ours
before = state()
names = []
for package in ("zkynet", "experiments"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if ".bench." in info.name or info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
after = state()
changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
if "environ" in changed:
    b, a = changed["environ"]
    changed["environ"] = {k: (b.get(k), a.get(k)) for k in set(b) | set(a) if b.get(k) != a.get(k)}
print(len(names), "modules imported")
print("changed:", changed)
"""


@pytest.mark.slow  # a fresh process importing every module
def test_importing_every_module_changes_no_process_state():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    imported = int(result.stdout.split(" modules imported")[0].split()[-1])
    assert imported > 80, result.stdout  # the walk found the packages
    assert "changed: {}" in result.stdout, result.stdout
