"""Bookkeeping every sweep shares: ranking its trials by the task's objective, and,
for Hydra's own basic sweeper (`hydra/sweeper=basic hydra/launcher=basic`: jobs one
after another, for debugging), a Hydra callback that makes the sweep one MLflow run
with a child run per job. The Tune sweeper (experiments.tune_sweep) keeps its own
books and uses `rank`."""

import sys

from hydra.experimental.callback import Callback
from mlflow.entities import Metric

from experiments import lineage
from experiments.tracking import connect, default_tracking_uri, experiment_id

TUNE_SWEEPER = "hydra_plugins.zkynet_tune"


def rank(runs, metric, mode):
    """(a markdown table of `runs` best first by `metric`, lowest first for mode "min",
    highest for "max"; the best finished run or None). Overrides shared by every job
    are shown once, above the table."""
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


class SweepTracker(Callback):
    """The sweep's MLflow run for Hydra's basic sweeper: created before the first job
    (each job finds it by the sweep folder, experiments/run.py), ranked and ended
    after the last."""

    def on_multirun_start(self, config, **kwargs):
        if self._skip(config):
            return
        uri = config.tracking.uri or default_tracking_uri()
        client = connect(uri)
        run = client.create_run(
            experiment_id(client, uri, config.tracking.experiment),
            run_name=f"sweep {config.hydra.sweep.dir}",
            tags={lineage.SWEEP: str(config.hydra.sweep.dir), lineage.OVERRIDES: " ".join(config.hydra.overrides.task)},
        )
        print(f"sweep: MLflow run {run.info.run_id}, one child run per job", file=sys.stderr)

    def on_multirun_end(self, config, **kwargs):
        if self._skip(config):
            return
        client = connect(config.tracking.uri or default_tracking_uri())
        experiment = client.get_experiment_by_name(config.tracking.experiment).experiment_id
        parent = lineage.sweep_run(client, experiment, str(config.hydra.sweep.dir))
        children = lineage.trials(client, parent)
        metric, mode = config.task.objective, config.task.mode
        table, best = rank(children, metric, mode)
        print(
            f"\nsweep {parent.info.run_id}: {len(children)} jobs ranked by {metric} ({mode})\n{table}\n",
            file=sys.stderr,
        )
        client.log_text(parent.info.run_id, table + "\n", lineage.SWEEP_TABLE)
        if best is not None:
            client.log_batch(parent.info.run_id, metrics=[Metric(f"best_{metric}", best.data.metrics[metric], 0, 0)])
            client.set_tag(parent.info.run_id, lineage.BEST_RUN, best.info.run_id)
        failed = [r for r in children if r.info.status != "FINISHED"]
        client.set_terminated(parent.info.run_id, "FAILED" if failed or not children else "FINISHED")
        if failed or not children:
            print(f"sweep: {len(failed)} of {len(children)} jobs did not finish", file=sys.stderr)
            raise SystemExit(1)

    @staticmethod
    def _skip(config):
        return not config.tracking.enabled or config.hydra.sweeper._target_.startswith(TUNE_SWEEPER)
