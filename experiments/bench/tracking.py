"""The cost of watching a run: the default digits MLP trained bare vs with what
`experiments.run` adds by default: the progress report, MLflow metrics (every n
steps and per epoch), the NaN guard and checkpoints (every epoch, at most every
30 s, and at the end). Epoch wall times (training, validation and callbacks;
the first epoch, which compiles, is left out) are compared within one run,
alternating bare and watched trainings. Target: <= 3% slower.
"""

import os
import statistics
import tempfile
import time

from experiments.bench import write_result
from experiments.tracking import MetricsLogger, Tracker
from zkynet import losses, optim
from zkynet.data import load_digits
from zkynet.models.cnn import LeNet
from zkynet.models.fcn import MLP
from zkynet.training import Callback, Checkpointer, NanGuard, ProgressReport, Trainer

MODELS = {  # name -> (model, input layout): the default runs of `model=mlp` and `model=cnn`
    "mlp": (lambda: MLP([64, 256, 256, 10], key=0), "flat"),
    "cnn": (lambda: LeNet((1, 8, 8), channels=(16, 32), hidden=(64,), key=0), "image"),
}

TARGET = 0.03


class EpochClock(Callback):
    def __init__(self):
        self.stamps = []

    def on_epoch_end(self, trainer, epoch, record):
        self.stamps.append(time.perf_counter())

    def seconds(self):
        return [b - a for a, b in zip(self.stamps[:-1], self.stamps[1:], strict=True)]


def train(model, dataset, epochs, folder, watched, log_every):
    clock = EpochClock()
    callbacks: list[Callback] = [clock]
    tracker = None
    if watched:
        tracker = Tracker(f"sqlite:///{folder}/mlflow.db", "bench-tracking")
        checkpointer = Checkpointer(os.path.join(folder, "last.npz"), every_n_epochs=1, min_seconds=30)
        callbacks = [MetricsLogger(tracker, log_every), ProgressReport(), NanGuard(log_every), checkpointer, clock]
    trainer = Trainer(
        model(),
        losses.softmax_cross_entropy,
        optim.Adam(1e-3),
        dataset,
        epochs,
        64,
        losses.classification_metrics,
        callbacks=callbacks,
    )
    trainer.fit()
    if tracker is not None:
        checkpointer.wait()
        tracker.close()
    return clock.seconds()


def add_arguments(parser):
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--json", default="outputs/bench/tracking.json")


def run(args):
    rows = []
    for name in args.models:
        model, layout = MODELS[name]
        dataset = load_digits(layout)
        times: dict[str, list[float]] = {"bare": [], "watched": []}
        with tempfile.TemporaryDirectory() as folder:
            for _ in range(args.rounds):
                for kind in times:
                    times[kind] += train(model, dataset, args.epochs, folder, kind == "watched", args.log_every)
        bare, watched = statistics.median(times["bare"]), statistics.median(times["watched"])
        rows.append(dict(model=name, bare_epoch_s=bare, watched_epoch_s=watched, overhead=watched / bare - 1))
    print(f"\nepoch wall time, median of {args.rounds} x {args.epochs - 1} epochs; target overhead <= {TARGET:.0%}")
    for row in rows:
        print(
            f"{row['model']:<5} bare {row['bare_epoch_s'] * 1e3:7.2f} ms   "
            f"watched {row['watched_epoch_s'] * 1e3:7.2f} ms"
            f"   overhead {row['overhead']:+.1%} ({(row['watched_epoch_s'] - row['bare_epoch_s']) * 1e3:+.2f} ms)"
        )
    write_result(
        args.json,
        dict(benchmark="tracking", epochs=args.epochs, rounds=args.rounds, log_every=args.log_every, rows=rows),
    )
