"""A sweep's trials ranked by the task's objective: the table every sweep ends with
(the Tune driver's and the basic sweeper's), and its best run. Numbers show 4
significant digits, in the metrics and in the overrides alike (the runs' params keep
every digit)."""

import math
import re
from collections.abc import Sequence
from typing import Any

from experiments import lineage

NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?|(?<![\w.])-?\d+[eE][-+]?\d+")


def shown(value: Any) -> str:
    """A number with 4 significant digits (an integer as it is)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 1e6):
        return str(int(value))
    return f"{value:.4g}"


def short(override: str) -> str:
    """`optimizer.lr=0.005185713905447035` -> `optimizer.lr=0.005186`: every decimal number in
    an override with 4 significant digits."""
    key, sep, value = override.partition("=")
    return key + sep + NUMBER.sub(lambda m: f"{float(m.group()):.4g}", value) if sep else override


def rank(runs: Sequence[Any], metric: str, mode: str) -> tuple[str, Any]:
    """(a markdown table of `runs` (MLflow runs) best first by `metric`, lowest first for
    mode "min", highest for "max", with the task's other validation metrics beside it;
    the best finished run or None). Overrides shared by every trial are shown once,
    above the table."""
    sign = {"min": 1, "max": -1}[mode]
    ranked = sorted(
        runs,
        key=lambda r: (
            metric not in r.data.metrics,
            sign * r.data.metrics.get(metric, 0.0),
            _number(r),
        ),
    )
    overrides = [r.data.tags.get(lineage.OVERRIDES, "").split() for r in ranked]
    common = set.intersection(*map(set, overrides)) if overrides else set()
    others = sorted({k for r in ranked for k in r.data.metrics if k.startswith("val_") and k != metric})
    columns = [metric, *others]
    lines = [
        f"all trials: {' '.join(short(o) for o in overrides[0] if o in common) or '-'}" if overrides else "",
        "",
        f"| rank | trial | status | {' | '.join(columns)} | overrides | run id |",
        "| --- | --- | --- | " + "--- | " * len(columns) + "--- | --- |",
    ]
    for position, (run, own) in enumerate(zip(ranked, overrides, strict=True), 1):
        stopped = (
            f" (stopped at epoch {run.data.tags[lineage.STOPPED_AT_EPOCH]})"
            if lineage.STOPPED_AT_EPOCH in run.data.tags
            else ""
        )
        values = " | ".join(shown(run.data.metrics[c]) if c in run.data.metrics else "" for c in columns)
        lines.append(
            f"| {position} | {run.data.tags.get(lineage.SWEEP_JOB, '?')} | {run.info.status}{stopped} | {values} | "
            f"{' '.join(short(o) for o in own if o not in common)} | {run.info.run_id} |"
        )
    scored = [r for r in ranked if metric in r.data.metrics and r.info.status == "FINISHED"]
    return "\n".join(lines), scored[0] if scored else None


def _number(run: Any) -> int:
    job = run.data.tags.get(lineage.SWEEP_JOB, "")
    return int(job) if job.isdigit() else 0
