"""Pictures a run leaves behind: its computational graph and its learning curves."""
import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402

from zkynet.framework.compile import Objective  # noqa: E402
from zkynet.visual import plot_cg  # noqa: E402


def graph_image(model, loss, batch, path, title, depth="auto"):
    """The graph of loss(model(inputs), targets) on the first two examples of `batch`."""
    sample = [part[:2] for part in batch]
    graph = Objective(model, loss)(*sample)
    return plot_cg(graph, save_path=str(path), title=title, depth=depth)


def curves_image(history, path, title):
    """Train/validation loss (and any other shared metric) per epoch."""
    names = sorted({k[len("train_"):] for k in history[0] if k.startswith("train_")}
                   & {k[len("val_"):] for k in history[0] if k.startswith("val_")})
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    epochs = [record["epoch"] for record in history]
    for axis, name in zip(axes[0], names):
        for split in ("train", "val"):
            axis.plot(epochs, [record[f"{split}_{name}"] for record in history], marker=".", label=split)
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
