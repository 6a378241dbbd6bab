"""Rerunnable benchmarks. Each reports ratios against a reference timed in the
same run, because shared machines are noisy: `python -m experiments.bench --help`."""

import json
import os


def write_result(path, record):
    """Save a benchmark's `record` as JSON at `path` (folders created) and say where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {path}")
