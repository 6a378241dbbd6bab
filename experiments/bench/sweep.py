"""Sweeps, measured in one run on this machine.

wall: N digits-MLP trials on Ray Tune (the default -m sweeper) vs Hydra's basic
sweeper and launcher, which run them one after another in one process (start-up
included); and how soon a trial on a warm worker (one that already ran a trial)
reaches its first step. Targets: Tune / sequential <= 0.75 for 8 trials of 200
epochs; warm start <= 1 s.

asha: a random search (learning rate x width) with FIFO, every trial trained to
the end, then the same trials (same seed) with ASHA. Targets: ASHA's best
validation accuracy within 0.5 percentage points of FIFO's best, with <= 40% of
FIFO's epochs.

pack: 8 digits-MLP configurations (learning rate x seed, 200 epochs) trained one
after another (Hydra's basic sweeper and launcher), then as one packed trial on
Ray Tune (hydra.sweeper.pack=8). Targets: packed wall / sequential <= 0.35, and
the pack's training throughput (samples/s summed over its members) >= 3x one
unpacked run's. `--pack-model cnn` packs the digits CNN instead; `--gpu` sizes
either for a GPU (wider layers, larger batches, 32 configurations per pack, the
trial on a GPU).

fixed: the fixed cost of a trial (experiments.bench.trial_cost): 64 one-epoch
trials sequentially and on Tune; fixed cost per trial on a warm worker (target
<= 0.25 s), trials per minute, and where a warm trial's time goes.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from experiments.bench import trial_cost, write_result

ROOT = Path(__file__).resolve().parents[2]
TARGET, WARM_TARGET = 0.75, 1.0
ENGINES = {"sequential": ["hydra/sweeper=basic", "hydra/launcher=basic"], "tune": []}


def sweep_seconds(engine, seeds, overrides, folder):
    store = f"sqlite:///{folder}/{engine}.db"
    command = [
        sys.executable,
        "-m",
        "experiments.run",
        "-m",
        *ENGINES[engine],
        f"seed={','.join(map(str, seeds))}",
        f"tracking.uri={store}",
        f"hydra.sweep.dir={folder}/{engine}",
        "trainer.progress=false",
        *overrides,
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{engine} sweep failed:\n{result.stderr[-3000:]}")
    return seconds, store


def every_run(client):
    """The store's runs, whichever experiment (one per task) they landed in."""
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def warm_starts(store):
    """startup_seconds of the trials that ran on a worker that had run one before."""
    client = MlflowClient(store)
    runs = sorted(
        (r for r in every_run(client) if "startup_seconds" in r.data.metrics), key=lambda r: r.info.start_time
    )
    seen, warm = set(), []
    for run in runs:
        pid = run.data.tags.get("pid")
        if pid in seen:
            warm.append(run.data.metrics["startup_seconds"])
        seen.add(pid)
    return warm


ASHA_SPACE = [
    "optimizer.lr=tag(log, interval(1e-4, 3e-2))",
    "model.widths=[64,16,10],[64,64,10],[64,256,10],[64,256,256,10]",
]
ASHA_ACCURACY_GAP, ASHA_EPOCH_SHARE = 0.005, 0.4


def asha_versus_fifo(args, folder):
    """(FIFO's best val_accuracy and epochs trained, ASHA's), on the same trials."""
    outcome = {}
    for scheduler in ("fifo", "asha"):
        overrides = [
            "hydra.sweeper.search=random",
            f"hydra.sweeper.num_samples={args.asha_trials}",
            f"hydra.sweeper.scheduler={scheduler}",
            f"trainer.epochs={args.asha_epochs}",
            "task.objective=val_accuracy",
            "task.mode=max",
            *ASHA_SPACE,
        ]
        store = f"sqlite:///{folder}/{scheduler}.db"
        command = [
            sys.executable,
            "-m",
            "experiments.run",
            "-m",
            f"tracking.uri={store}",
            f"hydra.sweep.dir={folder}/{scheduler}",
            "trainer.progress=false",
            *overrides,
        ]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{scheduler} sweep failed:\n{result.stderr[-3000:]}")
        client = MlflowClient(store)
        trials = [r for r in every_run(client) if "sweep_job" in r.data.tags]
        outcome[scheduler] = (
            max(r.data.metrics["val_accuracy"] for r in trials),
            sum(int(r.data.metrics["epoch"]) for r in trials),
        )
    return outcome


PACK_SPACE = ["optimizer.lr=3e-4,1e-3,3e-3,1e-2", "seed=0,1"]
PACK_GPU = dict(
    space=["optimizer.lr=1e-4,3e-4,1e-3,3e-3", "seed=range(0,8)"], pack=32, sweeper=["hydra.sweeper.resources.gpu=1"]
)
PACK_MODELS = {  # --pack-model -> (overrides on this CPU, overrides sized for a GPU)
    "mlp": (["model=mlp"], ["model=mlp", "model.widths=[64,2048,2048,10]", "trainer.batch_size=256"]),
    "cnn": (["model=cnn"], ["model=cnn", "model.channels=[64,128]", "model.hidden=[512]", "trainer.batch_size=256"]),
}
PACK_WALL_TARGET, PACK_THROUGHPUT_TARGET = 0.35, 3.0


def training_throughput(store):
    """Each run's median samples/s over its epochs (the first one compiles), by run."""
    client = MlflowClient(store)
    runs = every_run(client)
    return [
        statistics.median(m.value for m in client.get_metric_history(r.info.run_id, "samples_per_second")[1:])
        for r in runs
        if "sweep_job" in r.data.tags
    ]


def population_versus_trainer(widths, members, epochs=20):
    """In this process, without the runner: (one Trainer's samples/s, a PopulationTrainer's
    summed over its members), medians over epochs after the first (it compiles)."""
    from zkynet import losses, optim
    from zkynet.data import load_digits
    from zkynet.models.fcn import MLP
    from zkynet.training import PopulationTrainer, Trainer

    digits = load_digits()
    steps = epochs * (len(digits.train) // 64)
    common = dict(
        loss=losses.softmax_cross_entropy,
        dataset=digits,
        epochs=epochs,
        batch_size=64,
        metrics=losses.classification_metrics,
        eval_batch_size=512,
    )
    alone = Trainer(MLP(widths, key=0), optimizer=optim.Adam(optim.Cosine(1e-3, steps)), **common).fit()
    population = PopulationTrainer(
        [MLP(widths, key=k) for k in range(members)],
        optimizers=[optim.Adam(optim.Cosine(1e-3 * (k + 1), steps)) for k in range(members)],
        seeds=list(range(members)),
        **common,
    ).fit()

    def median(history):
        return statistics.median(r["samples_per_second"] for r in history[1:])

    return median(alone), sum(median(history) for history in population)


def pack_versus_sequential(args, folder):
    """(sequential seconds, packed seconds, one unpacked run's samples/s, the pack's summed)."""
    gpu: dict[str, Any] = PACK_GPU if args.gpu else dict(space=PACK_SPACE, pack=8, sweeper=[])
    gpu = dict(gpu, overrides=PACK_MODELS[args.pack_model][1 if args.gpu else 0])
    packed_settings = [
        f"hydra.sweeper.pack={gpu['pack']}",
        *gpu["sweeper"],
        f"hydra.sweeper.resources.cpu={os.cpu_count()}",
    ]  # one pack: every core
    outcome = {}
    for engine, settings in (("sequential", ENGINES["sequential"]), ("packed", packed_settings)):
        store = f"sqlite:///{folder}/pack-{engine}.db"
        command = [
            sys.executable,
            "-m",
            "experiments.run",
            "-m",
            *settings,
            f"tracking.uri={store}",
            f"hydra.sweep.dir={folder}/pack-{engine}",
            "trainer.progress=false",
            *(o for o in args.overrides if not o.startswith("model=")),
            *gpu["overrides"],
            *gpu["space"],
        ]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{engine} sweep failed:\n{result.stderr[-3000:]}")
        outcome[engine] = (seconds, training_throughput(store))
    (sequential, alone), (packed, members) = outcome["sequential"], outcome["packed"]
    return sequential, packed, statistics.median(alone), sum(members), len(members)


def add_arguments(parser):
    parser.add_argument("--part", choices=["wall", "asha", "pack", "fixed", "all"], default="all")
    parser.add_argument("--fixed-trials", type=int, default=64, help="fixed part: how many one-epoch trials")
    parser.add_argument("--root", default=None, help="fixed part: the checkout whose code runs (default: this one)")
    parser.add_argument("--gpu", action="store_true", help="pack part: sizes for a GPU (the pack trial asks for one)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument(
        "--overrides",
        nargs="*",
        default=["model=mlp", "trainer.epochs=200"],
        help="what each trial of the wall-time part trains (default: the digits MLP, 200 epochs)",
    )
    parser.add_argument(
        "--pack-model",
        choices=sorted(PACK_MODELS),
        default="mlp",
        help="pack part: the model of every configuration (with --gpu, sized for a GPU)",
    )
    parser.add_argument(
        "--population-widths",
        type=int,
        nargs="*",
        default=[256, 256],
        help="pack part: hidden widths of the MLP trained in-process by a PopulationTrainer and by "
        "one Trainer (library throughput without the runner; default: the runner's MLP)",
    )
    parser.add_argument("--asha-trials", type=int, default=16)
    parser.add_argument("--asha-epochs", type=int, default=30)
    parser.add_argument("--json", default="outputs/bench/sweep.json")


def run(args):
    result: dict[str, Any] = dict(benchmark="sweep", cpus=os.cpu_count())
    with tempfile.TemporaryDirectory() as folder:
        if args.part in ("wall", "all"):
            print(f"{args.trials} trials of: {' '.join(args.overrides)} ({os.cpu_count()} cpus)")
            seeds = list(range(args.trials))
            sequential, _ = sweep_seconds("sequential", seeds, args.overrides, folder)
            tune, store = sweep_seconds("tune", seeds, args.overrides, folder)
            warm = warm_starts(store)
            ratio = tune / sequential
            print(
                f"sequential {sequential:.1f}s   tune {tune:.1f}s   tune / sequential {ratio:.2f} (target <= {TARGET})"
            )
            if warm:
                print(
                    f"warm workers: {len(warm)} trials reached their first step {statistics.median(warm):.2f}s "
                    f"(median; max {max(warm):.2f}s) after reaching their worker (target <= {WARM_TARGET}s)"
                )
            result.update(
                trials=args.trials,
                overrides=args.overrides,
                sequential_s=sequential,
                tune_s=tune,
                ratio=ratio,
                warm_startup_s=warm,
            )
        if args.part in ("asha", "all"):
            outcome = asha_versus_fifo(args, folder)
            (fifo_best, fifo_epochs), (asha_best, asha_epochs) = outcome["fifo"], outcome["asha"]
            print(
                f"{args.asha_trials} random trials of {args.asha_epochs} epochs: FIFO best val_accuracy "
                f"{fifo_best:.4f} in {fifo_epochs} epochs; ASHA best {asha_best:.4f} in {asha_epochs} epochs "
                f"({asha_epochs / fifo_epochs:.0%} of FIFO's; targets: within {ASHA_ACCURACY_GAP:.1%} "
                f"with <= {ASHA_EPOCH_SHARE:.0%})"
            )
            result.update(
                asha=dict(
                    trials=args.asha_trials,
                    epochs=args.asha_epochs,
                    fifo_best=fifo_best,
                    fifo_epochs=fifo_epochs,
                    asha_best=asha_best,
                    asha_epochs=asha_epochs,
                )
            )
        if args.part in ("pack", "all"):
            sequential, packed, alone, summed, count = pack_versus_sequential(args, folder)
            print(
                f"{'GPU sizes: ' if args.gpu else ''}{args.pack_model}: {count} configurations one after another "
                f"{sequential:.1f}s, packed "
                f"{packed:.1f}s: packed / sequential {packed / sequential:.2f} (target <= {PACK_WALL_TARGET}); "
                f"training throughput {summed:,.0f} samples/s summed over the pack vs {alone:,.0f} for one "
                f"unpacked run: {summed / alone:.1f}x (target >= {PACK_THROUGHPUT_TARGET}x)"
            )
            result.update(
                pack=dict(
                    gpu=args.gpu,
                    model=args.pack_model,
                    configurations=count,
                    sequential_s=sequential,
                    packed_s=packed,
                    ratio=packed / sequential,
                    alone_samples_per_s=alone,
                    pack_samples_per_s=summed,
                    throughput_ratio=summed / alone,
                )
            )
            if not args.gpu and args.pack_model == "mlp":
                widths = [64, *args.population_widths, 10]
                one, population = population_versus_trainer(widths, count)
                print(
                    f"in this process, MLP {widths}: {count} members of a PopulationTrainer {population:,.0f} "
                    f"samples/s summed vs one Trainer {one:,.0f}: {population / one:.1f}x"
                )
                result["pack"].update(
                    population_widths=widths, population_samples_per_s=population, trainer_samples_per_s=one
                )
        if args.part in ("fixed", "all"):
            result["fixed"] = trial_cost.run(args, folder)
    write_result(args.json, result)
