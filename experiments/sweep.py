"""Sweeps (`python -m experiments.run -m ...`): Hydra's Ray launcher plugin runs
every job as a Ray task; this Hydra callback makes the sweep one MLflow run with a
child run per job.

In the driver, before any job starts, it
  * joins or starts Ray with the launcher's `init` settings (without the plugin's
    local object-store size when joining an existing cluster: that breaks it);
  * resolves per-job resources: num_gpus "auto" is one GPU per job when the cluster
    has GPUs, none otherwise; jobs see XLA_PYTHON_CLIENT_PREALLOCATE=false
    (fractional GPUs share memory) and JAX_PLATFORMS=cuda when given a GPU (no
    silent fallback to the CPU), cpu otherwise;
  * creates the sweep's MLflow run, tagged with the sweep folder, which each job
    finds (experiments.run) and attaches its own run to as a child.
When all jobs are done it ranks them by the task's objective (in the task's `mode`:
min or max), prints the table,
logs it to the sweep's run, and ends it FAILED (and the process with exit code 1)
if any job failed.
"""
import math
import os
import sys

import ray
from hydra.experimental.callback import Callback
from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray
from mlflow.entities import Metric
from omegaconf import OmegaConf, open_dict

from experiments import lineage
from experiments.tracking import connect, default_tracking_uri, experiment_id


def job_resources(remote, cluster_gpus):
    """ray.remote options for one job, with num_gpus "auto" resolved and JAX's environment."""
    remote = dict(remote)
    gpus = remote.get("num_gpus", 0)
    if gpus == "auto":
        gpus = 1 if cluster_gpus >= 1 else 0
    remote["num_gpus"] = gpus
    runtime_env = dict(remote.get("runtime_env") or {})
    runtime_env["env_vars"] = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "JAX_PLATFORMS": "cuda" if gpus else "cpu",
                               **runtime_env.get("env_vars", {})}  # the user's own settings win
    remote["runtime_env"] = runtime_env
    return remote


def pin_to_assigned_cpus(job):
    """Inside a Ray task: keep this process (and so JAX's thread pool) on as many cores
    as the task asked Ray for, `job`-numbered jobs taking consecutive cores. JAX sizes
    its threads by the cores it may run on; left alone, every job of a sweep spreads
    over all cores and concurrent jobs thrash. Returns the cores, or None outside Ray."""
    if not ray.is_initialized():
        return None
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    available = sorted(os.sched_getaffinity(0))
    if not cpus or cpus >= len(available):
        return None
    count = math.ceil(cpus)
    cores = {available[(job * count + i) % len(available)] for i in range(count)}
    os.sched_setaffinity(0, cores)
    return cores


class SweepTracker(Callback):
    def on_multirun_start(self, config, **kwargs):
        launcher = config.hydra.launcher
        if "RayLauncher" in launcher.get("_target_", ""):
            with open_dict(launcher):
                if launcher.ray.init.get("address"):
                    launcher.ray.init.object_store_memory = None
                try:
                    start_ray(launcher.ray.init)
                except ConnectionError as e:
                    raise ConnectionError(f"{e}\n(a cluster started with `ray start` uses token authentication: "
                                          "export RAY_AUTH_MODE=token, or pass address=auto on its head node)") from e
                remote = OmegaConf.to_container(launcher.ray.remote, resolve=True)
                launcher.ray.remote = job_resources(remote, ray.cluster_resources().get("GPU", 0))
            print(f"sweep: every job asks Ray for num_cpus={launcher.ray.remote.get('num_cpus')} "
                  f"num_gpus={launcher.ray.remote.num_gpus}", file=sys.stderr)
        if config.tracking.enabled:
            uri = config.tracking.uri or default_tracking_uri()
            client = connect(uri)
            run = client.create_run(experiment_id(client, uri, config.tracking.experiment),
                                    run_name=f"sweep {config.hydra.sweep.dir}",
                                    tags={lineage.SWEEP: str(config.hydra.sweep.dir),
                                          lineage.OVERRIDES: " ".join(config.hydra.overrides.task)})
            print(f"sweep: MLflow run {run.info.run_id}, one child run per job", file=sys.stderr)

    def on_multirun_end(self, config, **kwargs):
        if not config.tracking.enabled:
            return
        client = connect(config.tracking.uri or default_tracking_uri())
        experiment = client.get_experiment_by_name(config.tracking.experiment).experiment_id
        parent = lineage.sweep_run(client, experiment, str(config.hydra.sweep.dir))
        children = lineage.trials(client, parent)
        metric, mode = config.task.objective, config.task.mode
        table, best = rank(children, metric, mode)
        print(f"\nsweep {parent.info.run_id}: {len(children)} jobs ranked by {metric} ({mode})\n{table}\n",
              file=sys.stderr)
        client.log_text(parent.info.run_id, table + "\n", lineage.SWEEP_TABLE)
        if best is not None:
            client.log_batch(parent.info.run_id, metrics=[Metric(f"best_{metric}", best.data.metrics[metric], 0, 0)])
            client.set_tag(parent.info.run_id, lineage.BEST_RUN, best.info.run_id)
        failed = [r for r in children if r.info.status != "FINISHED"]
        client.set_terminated(parent.info.run_id, "FAILED" if failed or not children else "FINISHED")
        if failed or not children:
            print(f"sweep: {len(failed)} of {len(children)} jobs did not finish", file=sys.stderr)
            raise SystemExit(1)


def rank(runs, metric, mode):
    """(a markdown table of `runs` best first by `metric`, lowest first for mode "min",
    highest for "max"; the best finished run or None). Overrides shared by every job
    are shown once, above the table."""
    sign = {"min": 1, "max": -1}[mode]
    ranked = sorted(runs, key=lambda r: (metric not in r.data.metrics, sign * r.data.metrics.get(metric, 0.0)))
    overrides = [r.data.tags.get(lineage.OVERRIDES, "").split() for r in ranked]
    common = set.intersection(*map(set, overrides)) if overrides else set()
    lines = [f"all jobs: {' '.join(o for o in overrides[0] if o in common) or '-'}" if overrides else "", "",
             f"| rank | job | status | {metric} | overrides | run id |", "| --- | --- | --- | --- | --- | --- |"]
    for position, (run, own) in enumerate(zip(ranked, overrides), 1):
        value = run.data.metrics.get(metric)
        lines.append(f"| {position} | {run.data.tags.get(lineage.SWEEP_JOB, '?')} | {run.info.status} | "
                     f"{'' if value is None else f'{value:.4g}'} | {' '.join(o for o in own if o not in common)} | "
                     f"{run.info.run_id} |")
    scored = [r for r in ranked if metric in r.data.metrics and r.info.status == "FINISHED"]
    return "\n".join(lines), scored[0] if scored else None
