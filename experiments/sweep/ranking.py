"""A sweep's trials ranked by the task's objective: the table every sweep ends with
(the Tune driver's and the basic sweeper's), and its best run."""

from collections.abc import Sequence
from typing import Any

from experiments import lineage


def rank(runs: Sequence[Any], metric: str, mode: str) -> tuple[str, Any]:
    """(a markdown table of `runs` (MLflow runs) best first by `metric`, lowest first for
    mode "min", highest for "max"; the best finished run or None). Overrides shared by
    every job are shown once, above the table."""
    sign = {"min": 1, "max": -1}[mode]
    ranked = sorted(runs, key=lambda r: (metric not in r.data.metrics, sign * r.data.metrics.get(metric, 0.0)))
    overrides = [r.data.tags.get(lineage.OVERRIDES, "").split() for r in ranked]
    common = set.intersection(*map(set, overrides)) if overrides else set()
    lines = [
        f"all jobs: {' '.join(o for o in overrides[0] if o in common) or '-'}" if overrides else "",
        "",
        f"| rank | job | status | {metric} | overrides | run id |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for position, (run, own) in enumerate(zip(ranked, overrides, strict=True), 1):
        value = run.data.metrics.get(metric)
        stopped = (
            f" (stopped at epoch {run.data.tags[lineage.STOPPED_AT_EPOCH]})"
            if lineage.STOPPED_AT_EPOCH in run.data.tags
            else ""
        )
        lines.append(
            f"| {position} | {run.data.tags.get(lineage.SWEEP_JOB, '?')} | {run.info.status}{stopped} | "
            f"{'' if value is None else f'{value:.4g}'} | {' '.join(o for o in own if o not in common)} | "
            f"{run.info.run_id} |"
        )
    scored = [r for r in ranked if metric in r.data.metrics and r.info.status == "FINISHED"]
    return "\n".join(lines), scored[0] if scored else None
