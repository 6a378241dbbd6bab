"""The fixed cost of a sweep's trial: `python -m experiments.bench sweep --part fixed`.

64 one-epoch digits-MLP trials (64 learning rates, so no two trials are the same
program for a step that bakes its hyperparameters in), swept three ways:
  * sequential: Hydra's basic sweeper and launcher, one process, one after another;
  * Tune, one trial at a time (max_concurrent=1): one warm worker, nothing competing;
  * the same with every trial's curves and model drawn as it ends (results=every: what
    the sequential sweep draws; the default draws the best trial's when the sweep ends);
  * Tune, as many at once as the machine has cores.
A trial's cost on a worker is the time between the ends of two consecutive trials of
that worker (MLflow's end times, grouped by the runs' pid tag): everything the trial
needs besides its training, plus the training. The fixed cost is that minus the
training itself (one epoch's steps and validation, measured here in-process with a
compiled Trainer), median over the warm trials (not a worker's first). Target:
<= 0.25 s on a warm worker.

With ZKYNET_SWEEP_PROFILE set, the Tune workers profile every trial (cProfile, the
trial's thread) and time its phases; the benchmark prints where a warm trial's time
goes. `--root` runs another checkout's code (the same benchmark on main: before/after).
"""

import itertools
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from experiments.sweep.worker import PROFILE_ENV

ROOT = Path(__file__).resolve().parents[2]
TARGET = 0.25
# where a trial's time goes: (label, file, function), as cProfile names them (cumulative seconds)
PHASES = [
    ("compose the trial's config (Hydra)", "experiments/sweep/worker.py", "_trial_config"),
    ("MLflow run created, tagged", "experiments/tracking.py", "__init__"),
    ("git commit and status", "experiments/lineage.py", "source_tags"),
    ("params and the config file", "experiments/runner.py", "_log_config"),
    ("build the model", "experiments/build.py", "model"),
    ("build the data", "experiments/build.py", "dataset"),
    ("graph pictures", "experiments/runner.py", "_log_setup"),
    ("fit: training, with compiling", "zkynet/training/trainer.py", "fit"),
    ("  trace and lower (jit)", "jax/_src/pjit.py", "_resolve_and_lower"),
    ("  compile (XLA, or its cache)", "jax/_src/interpreters/pxla.py", "compile"),
    ("curves, samples", "experiments/runner.py", "_log_results"),
    ("the logged model", "experiments/runner.py", "_log_model"),
    ("end the run", "experiments/lifecycle.py", "__exit__"),
    ("last report to Tune", "experiments/sweep/worker.py", "report"),
]


def epoch_seconds(epochs: int = 5) -> float:
    """One epoch of the trials' training (steps and validation), compiled, in this process:
    the median time between epoch ends after the first."""
    from zkynet import losses, optim
    from zkynet.data import load_digits
    from zkynet.models.fcn import MLP
    from zkynet.training import Callback, Trainer

    ends: list[float] = []

    class Clock(Callback):
        def on_epoch_end(self, trainer, epoch, record):
            ends.append(time.perf_counter())

    digits = load_digits()
    Trainer(
        MLP([64, 256, 256, 10], key=0),
        losses.softmax_cross_entropy,
        optim.Adam(optim.Cosine(1e-3, 1000)),
        digits,
        epochs,
        64,
        losses.classification_metrics,
        eval_batch_size=512,
        callbacks=[Clock()],
    ).fit()
    return statistics.median(b - a for a, b in itertools.pairwise(ends[1:]))


def learning_rates(count: int) -> list[str]:
    return [f"{1e-4 * (100 ** (i / max(count - 1, 1))):.6g}" for i in range(count)]


def sweep(root: Path, folder: Path, name: str, count: int, settings: list[str], env: dict[str, str]) -> tuple:
    """(seconds, the store) of one sweep of `count` one-epoch trials."""
    store = f"sqlite:///{folder}/{name}.db"
    command = [
        sys.executable,
        "-m",
        "experiments.run",
        "-m",
        *settings,
        f"tracking.uri={store}",
        f"hydra.sweep.dir={folder}/{name}",
        "trainer.progress=false",
        "trainer.epochs=1",
        f"optimizer.lr={','.join(learning_rates(count))}",
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{name} sweep failed:\n{result.stderr[-3000:]}")
    return seconds, store


def warm_cycles(store: str) -> list[float]:
    """Seconds between the ends of consecutive trials of one worker (its warm trials)."""
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=5000)
    by_worker: dict[str, list[int]] = {}
    for run in runs:
        if "sweep_job" in run.data.tags and run.info.end_time:
            by_worker.setdefault(run.data.tags.get("pid", "?"), []).append(run.info.end_time)
    cycles = []
    for ends in by_worker.values():
        ends.sort()
        cycles += [(b - a) / 1000 for a, b in itertools.pairwise(ends)]
    return cycles


def profile_table(folder: Path) -> list[tuple[str, float]]:
    """Seconds per warm trial in each phase (PHASES), from the workers' profiles."""
    warm = [p for p in sorted(folder.glob("*.prof")) if not p.name.endswith("-first.prof")]
    if not warm:
        return []
    stats = pstats.Stats(str(warm[0]))
    for path in warm[1:]:
        stats.add(str(path))
    totals = {label: 0.0 for label, _, _ in PHASES}
    for (filename, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
        for label, file, name in PHASES:
            if function == name and filename.endswith(file):
                totals[label] += row[3]
    walls = [json.loads(p.read_text())["seconds"] for p in folder.glob("*.json") if "-first" not in p.name]
    return [("the trial in its worker", statistics.fmean(walls) if walls else 0.0)] + [
        (label, seconds / len(warm)) for label, seconds in totals.items()
    ]


def run(args: Any, folder: str) -> dict[str, Any]:
    root = Path(args.root).resolve() if args.root else ROOT
    base = Path(folder)
    count = args.fixed_trials
    profile = base / "profile"
    profile.mkdir()
    env = {**os.environ, "PYTHONPATH": str(root)}
    cores = os.cpu_count() or 1
    epoch = epoch_seconds()
    print(f"{count} one-epoch trials of the digits MLP ({root}); one epoch's training: {epoch * 1000:.0f} ms")
    outcome: dict[str, Any] = dict(trials=count, epoch_s=epoch, root=str(root))
    plans = [
        ("sequential", ["hydra/sweeper=basic", "hydra/launcher=basic"], env),
        ("tune, one at a time", ["hydra.sweeper.max_concurrent=1"], {**env, PROFILE_ENV: str(profile)}),
        ("tune, every trial's results", ["hydra.sweeper.max_concurrent=1", "hydra.sweeper.results=every"], env),
        (f"tune, {cores} at a time", [f"hydra.sweeper.ray.num_cpus={cores}"], env),
    ]
    if "results:" not in (root / "conf/hydra/sweeper/tune.yaml").read_text():  # older code: no such setting
        plans = [plan for plan in plans if "results" not in plan[0]]
    for name, settings, environment in plans:
        label = f"{name.split(',')[0].replace(' ', '-')}-{len(outcome)}"
        seconds, store = sweep(root, base, label, count, settings, environment)
        cycles = warm_cycles(store)
        cycle = statistics.median(cycles) if cycles else float("nan")
        fixed = cycle - epoch
        per_minute = count / seconds * 60
        print(
            f"{name:>22}: {seconds:6.1f} s, {per_minute:5.1f} trials/minute; a warm trial every {cycle:.3f} s "
            f"(median of {len(cycles)}): fixed cost {fixed:.3f} s per trial"
            + (f" (target <= {TARGET} s)" if "one at a time" in name else "")
        )
        outcome[name] = dict(seconds=seconds, trials_per_minute=per_minute, cycle_s=cycle, fixed_s=fixed)
    table = profile_table(profile)
    if table:
        print("where a warm trial's time goes (tune, one at a time; seconds per trial, phases overlap):")
        for label, seconds in table:
            print(f"  {label:<42} {seconds:6.3f}")
        outcome["profile"] = dict(table)
    return outcome
