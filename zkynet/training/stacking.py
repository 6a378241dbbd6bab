"""What the members of a population must share, and how their values are stacked:
one architecture (parameter shapes, dropout layers) and one optimizer signature;
hyperparameters and dropout rates as columns, one value per member
(zkynet.training.population)."""

from contextlib import contextmanager

import numpy as np

from zkynet.framework import cg
from zkynet.models.layers import Dropout


def dropout_layers(model) -> list[Dropout]:
    """The Dropout layers reachable from `model` through its attributes, in a fixed
    order (their rates are what a member may vary)."""
    found, seen, stack = [], set(), [model]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, cg.Module) and id(item) not in seen:
            seen.add(id(item))
            if isinstance(item, Dropout):
                found.append(item)
            stack.extend(reversed(list(vars(item).values())))
    return found


def traced_rate(rate, dtype):
    """`rate` in `dtype` such that 1 - rate, computed in `dtype`, is exactly what a Python
    constant gives (1 - rate in double precision, rounded once): the keep probability and
    the 1 / (1 - rate) scale of a traced rate are then the constant's to the bit."""
    keep = np.asarray(1 - rate, dtype)
    return np.asarray(1, dtype) - keep  # both subtractions exact: their results are representable


def columns(rows):
    """[{name: value}, ...] (one per member) -> {name: [value, ...]}."""
    return {name: [row[name] for row in rows] for name in rows[0]}


def same(values):
    return all(value == values[0] for value in values)


@contextmanager
def rates_set(layers, rates):
    """The dropout rates of `layers[i]` set to `rates[i]` (traced) while a member's step is traced."""
    saved = {i: layers[i].rate for i in rates}
    for i, rate in rates.items():
        layers[i].rate = rate
    try:
        yield
    finally:
        for i, rate in saved.items():
            layers[i].rate = rate


def check_architectures(models, dropouts):
    def shapes(model):
        return {name: (p.value.shape, p.value.dtype) for name, p in model.named_parameters().items()}

    first = shapes(models[0])
    for k, model in enumerate(models[1:], 1):
        if type(model) is not type(models[0]) or shapes(model) != first or len(dropouts[k]) != len(dropouts[0]):
            raise ValueError(
                f"population member {k} ({type(model).__name__}) is not the architecture of member 0 "
                f"({type(models[0]).__name__}): members may differ in values (initialization, "
                "dropout rates, optimizer hyperparameters), not in parameter shapes or layers"
            )


def check_optimizers(optimizers):
    first = optimizers[0].signature()
    for k, optimizer in enumerate(optimizers[1:], 1):
        if optimizer.signature() != first:
            raise ValueError(
                f"population member {k}'s optimizer {optimizer.signature()} differs from member 0's "
                f"{first} in more than its hyperparameters ({', '.join(optimizers[0].hyperparameters())})"
            )
