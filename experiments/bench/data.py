"""A dataset larger than memory: `dataset=npy` (files read row by row) against the same
data loaded into memory, training the same MLP. Each side runs in a process of its own,
so each peak resident memory (ru_maxrss) is its own: the mapped side should stay at a
few hundred MB whatever the file's size; the in-memory side holds the whole file.

    python -m experiments.bench data --gigabytes 6       # writes outputs/bench/data-files/ once (kept)
"""

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from experiments.bench import write_result

FEATURES, CLASSES = 784, 10


def add_arguments(parser):
    parser.add_argument("--gigabytes", type=float, default=6.0, help="size of x_train.npy (default 6)")
    parser.add_argument("--folder", default="outputs/bench/data-files", help="where the .npy files are written")
    parser.add_argument("--steps", type=int, default=400, help="training steps timed (after 50 untimed)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--output", default="outputs/bench/data.json")
    parser.add_argument("--side", choices=("mapped", "memory"), help="(internal) one side, in this process")


def write_files(folder, gigabytes):
    """x_train.npy of about `gigabytes` (float32 rows of 784 features: a class's pattern plus
    noise), y_train.npy, and small validation files; written in chunks, never whole."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = int(gigabytes * 2**30) // (FEATURES * 4)
    done = folder / "done.json"
    if done.exists() and json.loads(done.read_text()) == {"rows": rows}:
        return rows
    rng = np.random.default_rng(0)
    patterns = rng.random((CLASSES, FEATURES), dtype=np.float32)
    x = np.lib.format.open_memmap(folder / "x_train.npy", mode="w+", dtype=np.float32, shape=(rows, FEATURES))
    labels = rng.integers(0, CLASSES, rows).astype(np.int32)
    chunk = 65536
    for start in range(0, rows, chunk):
        y = labels[start : start + chunk]
        x[start : start + len(y)] = patterns[y] + 0.5 * rng.random((len(y), FEATURES), dtype=np.float32)
        if start // chunk % 64 == 0:
            print(f"writing {folder / 'x_train.npy'}: {start * FEATURES * 4 / 2**30:.1f} GB", file=sys.stderr)
    x.flush()
    del x
    np.save(folder / "y_train.npy", labels)
    y = rng.integers(0, CLASSES, 4096).astype(np.int32)
    np.save(folder / "x_validation.npy", patterns[y] + 0.5 * rng.random((4096, FEATURES), dtype=np.float32))
    np.save(folder / "y_validation.npy", y)
    done.write_text(json.dumps({"rows": rows}))
    return rows


class _Done(Exception):
    pass


def side(folder, mapped, steps, batch_size):
    """Train the MLP on the files (read row by row, or loaded whole); one JSON line out."""
    from zkynet import losses, optim
    from zkynet.data import Dataset, Split, load_npy
    from zkynet.models.fcn import MLP
    from zkynet.training import Callback, Trainer

    started = time.perf_counter()
    dataset = load_npy(folder)
    if not mapped:  # the same arrays, in memory
        dataset = Dataset(
            dataset.name,
            Split(np.load(folder / "x_train.npy"), np.load(folder / "y_train.npy")),
            Split(np.load(folder / "x_validation.npy"), np.load(folder / "y_validation.npy")),
            dataset.num_classes,
        )
    loaded = time.perf_counter() - started
    clock = {}

    class Timer(Callback):
        def on_step(self, trainer, metrics):
            if trainer.step == 50:
                np.asarray(metrics["loss"])
                clock["start"] = time.perf_counter()
            elif trainer.step == 50 + steps:
                np.asarray(metrics["loss"])
                clock["seconds"] = time.perf_counter() - clock["start"]
                raise _Done

    model = MLP([FEATURES, 256, 256, CLASSES], key=0)
    trainer = Trainer(
        model,
        losses.softmax_cross_entropy,
        optim.Adam(1e-3),
        dataset,
        1,
        batch_size,
        losses.classification_metrics,
        callbacks=[Timer()],
    )
    with contextlib.suppress(_Done):  # the timed steps are over
        trainer.fit()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux: kB)
    print(
        json.dumps(
            {
                "side": "mapped" if mapped else "memory",
                "peak_rss_mb": round(peak),
                "samples_per_second": round(steps * batch_size / clock["seconds"]),
                "seconds_to_load": round(loaded, 2),
            }
        )
    )


def run(args):
    folder = Path(args.folder)
    if args.side:
        side(folder, args.side == "mapped", args.steps, args.batch_size)
        return
    rows = write_files(folder, args.gigabytes)
    size = (folder / "x_train.npy").stat().st_size / 2**30
    print(f"{folder}: {rows} rows x {FEATURES} float32 = {size:.2f} GB", file=sys.stderr)
    results = []
    for which in ("mapped", "memory", "mapped"):  # mapped twice: the second reads from a warm page cache
        command = [
            sys.executable,
            "-m",
            "experiments.bench",
            "data",
            "--side",
            which,
            "--folder",
            str(folder),
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"the {which} side failed")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(results[-1], file=sys.stderr)
    record = {
        "gigabytes": round(size, 2),
        "rows": rows,
        "features": FEATURES,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "results": results,
    }
    write_result(args.output, record)
    mapped, memory = results[-1], results[1]
    print(
        f"x_train {size:.2f} GB: read row by row {mapped['peak_rss_mb']} MB peak RSS, "
        f"{mapped['samples_per_second']} samples/s; in memory {memory['peak_rss_mb']} MB, "
        f"{memory['samples_per_second']} samples/s ({mapped['samples_per_second'] / memory['samples_per_second']:.2f}x)"
    )
