"""Sweep wall time: N digits-MLP trials on Ray Tune (the default -m sweeper) vs
Hydra's basic sweeper and launcher, which run them one after another in one
process, on this machine, in one run (start-up included). Also: how soon a
trial on a warm worker (one that already ran a trial) reaches its first step.
Targets: Tune / sequential <= 0.75 for 8 trials of 200 epochs; warm start <= 1 s.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from experiments.bench import write_result

ROOT = Path(__file__).resolve().parents[2]
TARGET, WARM_TARGET = 0.75, 1.0
ENGINES = {"sequential": ["hydra/sweeper=basic", "hydra/launcher=basic"], "tune": []}


def sweep_seconds(engine, seeds, overrides, folder):
    store = f"sqlite:///{folder}/{engine}.db"
    command = [sys.executable, "-m", "experiments.run", "-m", *ENGINES[engine], f"seed={','.join(map(str, seeds))}",
               f"tracking.uri={store}", f"hydra.sweep.dir={folder}/{engine}", "trainer.progress=false", *overrides]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{engine} sweep failed:\n{result.stderr[-3000:]}")
    return seconds, store


def warm_starts(store):
    """startup_seconds of the trials that ran on a worker that had run one before."""
    client = MlflowClient(store)
    runs = sorted((r for r in client.search_runs([client.get_experiment_by_name("zkynet").experiment_id])
                   if "startup_seconds" in r.data.metrics), key=lambda r: r.info.start_time)
    seen, warm = set(), []
    for run in runs:
        pid = run.data.tags.get("pid")
        if pid in seen:
            warm.append(run.data.metrics["startup_seconds"])
        seen.add(pid)
    return warm


def add_arguments(parser):
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--overrides", nargs="*", default=["model=mlp", "trainer.epochs=200"],
                        help="what each trial trains (default: the digits MLP, 200 epochs)")
    parser.add_argument("--json", default="outputs/bench/sweep.json")


def run(args):
    print(f"{args.trials} trials of: {' '.join(args.overrides)} ({os.cpu_count()} cpus)")
    seeds = list(range(args.trials))
    with tempfile.TemporaryDirectory() as folder:
        sequential, _ = sweep_seconds("sequential", seeds, args.overrides, folder)
        tune, store = sweep_seconds("tune", seeds, args.overrides, folder)
        warm = warm_starts(store)
    ratio = tune / sequential
    print(f"sequential {sequential:.1f}s   tune {tune:.1f}s   tune / sequential {ratio:.2f} (target <= {TARGET})")
    if warm:
        print(f"warm workers: {len(warm)} trials reached their first step {statistics.median(warm):.2f}s "
              f"(median; max {max(warm):.2f}s) after reaching their worker (target <= {WARM_TARGET}s)")
    write_result(args.json, dict(benchmark="sweep", trials=args.trials, overrides=args.overrides, cpus=os.cpu_count(),
                                 sequential_s=sequential, tune_s=tune, ratio=ratio, warm_startup_s=warm))
