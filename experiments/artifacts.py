"""What a run leaves behind besides metrics: its computational graph, learning
curves, and a look at what the model produces (generated text, sampled or
reconstructed images). A Task names the looks worth drawing (`Task.artifacts`);
SAMPLES maps each name to what draws it."""

import os
import shutil
import threading

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from experiments.schema import ConfigError
from zkynet.framework.compile import Objective, forward
from zkynet.models.transformer import generate
from zkynet.visual import plot_cg

GRAPH_MAX_WIDTH = 1200  # pixels: about what MLflow's artifact preview shows unscaled on a 1920-pixel screen


def graph_images(model, loss, batch, paths, title, depth="auto", graph=None):
    """The graph of loss(model(inputs), targets) on the first two examples of `batch`, in
    each of `paths` (graph.png, graph.svg), drawn top to bottom and at most GRAPH_MAX_WIDTH
    wide: MLflow's artifact preview is a narrow pane that shrinks a wide picture until its
    labels cannot be read (the SVG zooms without blurring). `graph`: that graph, if
    already built."""
    if graph is None:
        sample = [part[:2] for part in batch]
        graph = Objective(model, loss)(*sample)
    return [
        plot_cg(graph, save_path=str(path), title=title, depth=depth, rankdir="TB", max_width=GRAPH_MAX_WIDTH)
        for path in paths
    ]


def shared(folder, key, paths, draw):
    """`paths` (files a run logs), drawn once per `key` into `folder` (a sweep's trials share
    it: `draw(paths)` makes them) and copied from there; the copies' paths."""
    made = folder / key
    if not all((made / path.name).exists() for path in paths):
        scratch = folder / f".{key}.{os.getpid()}.{threading.get_ident()}"
        scratch.mkdir(parents=True, exist_ok=True)
        draw([scratch / path.name for path in paths])
        try:
            scratch.rename(made)  # whole, at once: a trial drawing the same meanwhile keeps its own
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
    for path in paths:
        shutil.copyfile(made / path.name, path)
    return paths


def _figure(figsize):
    """A figure drawn by Agg into files: no pyplot, so no backend to select and no
    figure kept alive after it is saved."""
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure


def curves_image(history, path, title):
    """Train/validation loss (and any other shared metric) per epoch."""
    names = sorted(
        {k[len("train_") :] for k in history[0] if k.startswith("train_")}
        & {k[len("val_") :] for k in history[0] if k.startswith("val_")}
    )
    figure = _figure(figsize=(5 * len(names), 3.5))
    axes = figure.subplots(1, len(names), squeeze=False)
    epochs = [record["epoch"] for record in history]
    for axis, name in zip(axes[0], names, strict=True):
        for split in ("train", "val"):
            axis.plot(epochs, [record[f"{split}_{name}"] for record in history], marker=".", label=split)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axis.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)  # one epoch: one tick at it, not 0.945..1.05
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def text_sample(model, tokenizer, prompt_ids, path, steps=300, temperature=0.8, seed=0):
    """The model continuing a validation prompt, sampled at `temperature`."""
    tokens = generate(model, np.asarray(prompt_ids)[None, :], steps, temperature, jax.random.PRNGKey(seed))
    prompt = tokenizer.decode(prompt_ids)
    path.write_text(
        f"--- prompt ---\n{prompt}\n--- sampled continuation (temperature {temperature}) ---\n"
        f"{tokenizer.decode(np.asarray(tokens)[0, len(prompt_ids) :])}\n"
    )
    return path


def image_grid(rows, image_shape, path, title, row_titles=None):
    """Rows of images (each row: (count, features)) as one picture."""
    figure = _figure(figsize=(len(rows[0]) * 0.8, len(rows) * 0.9))
    axes = figure.subplots(len(rows), len(rows[0]), squeeze=False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            axes[r][c].imshow(np.asarray(image).reshape(image_shape[-2:]), cmap="gray_r", vmin=0, vmax=1)
            axes[r][c].axis("off")
        if row_titles:
            axes[r][0].set_title(row_titles[r], fontsize=8, loc="left")
    figure.suptitle(title)
    figure.savefig(path, dpi=100)
    return path


def reconstructions(model, inputs, image_shape, path, title, count=10):
    """Inputs (top) and the model's reconstructions (bottom)."""
    rebuilt = forward(model)(inputs[:count])
    return image_grid([inputs[:count], rebuilt], image_shape, path, title, ["inputs", "reconstructions"])


def _text_sample(model, dataset, folder, title, seed, image_shape):
    tokenizer = dataset.info["tokenizer"]
    return text_sample(model, tokenizer, dataset.validation.inputs[0][:64], folder / "samples.txt", seed=seed)


def _decoded_samples(model, dataset, folder, title, seed, image_shape):
    samples = model.sample(20, seed)
    return image_grid(
        [samples[:10], samples[10:]], image_shape, folder / "samples.png", f"{title}: decoded from z ~ N(0, I)"
    )


def _reconstructions(model, dataset, folder, title, seed, image_shape):
    return reconstructions(model, dataset.validation.inputs, image_shape, folder / "reconstructions.png", title)


# name -> (draw(model, dataset, folder, title, seed, image_shape) -> path, what it needs)
SAMPLES = {
    "text_sample": (_text_sample, "tokenizer"),
    "decoded_samples": (_decoded_samples, "image_shape"),
    "reconstructions": (_reconstructions, "image_shape"),
}


def check(names):
    """Refuse, before a run starts, a task asking for looks nobody draws."""
    unknown = [name for name in names if name not in SAMPLES]
    if unknown:
        raise ConfigError(f"task.artifacts: unknown {', '.join(unknown)}; known: {', '.join(SAMPLES)}")


def samples(names, model, dataset, folder, title, seed, image_shape):
    """The files of the looks `names` asks for, skipping those the data cannot give
    (no tokenizer, no image shape)."""
    available = {"tokenizer": "tokenizer" in dataset.info, "image_shape": bool(image_shape)}
    return [
        SAMPLES[name][0](model, dataset, folder, title, seed, image_shape)
        for name in names
        if available[SAMPLES[name][1]]
    ]
