"""Sweep wall time: eight short jobs on Ray (the default launcher) vs Hydra's basic
launcher, which runs them one after another in one process, on this machine, in
one run. A one-job sweep with each launcher gives Ray's own overhead (starting
Ray, a worker process, its imports). Target: Ray / basic <= 0.6 for 8 jobs.
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.bench import write_result

ROOT = Path(__file__).resolve().parents[2]
TARGET = 0.6


def sweep_seconds(launcher, seeds, overrides, folder):
    command = [sys.executable, "-m", "experiments.run", "-m", f"hydra/launcher={launcher}",
               f"seed={','.join(map(str, seeds))}", f"tracking.uri=sqlite:///{folder}/mlflow.db",
               f"hydra.sweep.dir={folder}/{launcher}-{len(seeds)}", "trainer.progress=false", *overrides]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{launcher} sweep failed:\n{result.stderr[-3000:]}")
    return seconds


def add_arguments(parser):
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--overrides", nargs="*", default=["model=mlp", "trainer.epochs=40"],
                        help="what each job trains (default: the digits MLP, 40 epochs)")
    parser.add_argument("--json", default="outputs/bench/sweep.json")


def run(args):
    print(f"{args.jobs} jobs of: {' '.join(args.overrides)} ({os.cpu_count()} cpus)")
    with tempfile.TemporaryDirectory() as folder:
        times = {}
        for launcher in ("basic", "ray_jobs"):
            times[launcher, 1] = sweep_seconds(launcher, [0], args.overrides, folder)
            times[launcher, args.jobs] = sweep_seconds(launcher, list(range(args.jobs)), args.overrides, folder)
    ratio = times["ray_jobs", args.jobs] / times["basic", args.jobs]
    overhead = times["ray_jobs", 1] - times["basic", 1]
    print(f"{'launcher':<10}{'1 job':>10}{f'{args.jobs} jobs':>10}")
    for launcher in ("basic", "ray_jobs"):
        print(f"{launcher:<10}{times[launcher, 1]:>9.1f}s{times[launcher, args.jobs]:>9.1f}s")
    print(f"Ray / basic for {args.jobs} jobs: {ratio:.2f} (target <= {TARGET}); what Ray adds to one job: "
          f"{overhead:+.1f}s (starting Ray, a worker process and its imports)")
    write_result(args.json, dict(benchmark="sweep", jobs=args.jobs, overrides=args.overrides, cpus=os.cpu_count(),
                                 seconds={f"{k[0]}-{k[1]}": v for k, v in times.items()}, ratio=ratio,
                                 ray_overhead_one_job_s=overhead))
