"""For Hydra's own basic sweeper (`hydra/sweeper=basic hydra/launcher=basic`: jobs one
after another in this process, for debugging): a Hydra callback that makes the sweep
one MLflow run with a child run per job, ranked at the end as a Tune sweep is. The
Tune sweeper (experiments.sweep.driver) keeps its own books."""

import sys

from hydra.experimental.callback import Callback
from mlflow.entities import Metric
from omegaconf import DictConfig

from experiments import lineage
from experiments.sweep.ranking import rank
from experiments.tracking import connect, default_tracking_uri, experiment_id

TUNE_SWEEPER = "hydra_plugins.zkynet_tune"  # zkynet's Tune sweeper (experiments/plugins/)


class SweepTracker(Callback):
    """The sweep's MLflow run for Hydra's basic sweeper: created before the first job
    (each job finds it by the sweep folder, experiments/run.py), ranked and ended
    after the last."""

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
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

    def on_multirun_end(self, config: DictConfig, **kwargs: object) -> None:
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
    def _skip(config: DictConfig) -> bool:
        """Whether this sweep is not the basic sweeper's to track (untracked, or on Tune)."""
        return not config.tracking.enabled or config.hydra.sweeper._target_.startswith(TUNE_SWEEPER)
