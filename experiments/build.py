"""Config -> objects: the dataset, model, optimizer and task a run trains with.
Anything with a `_target_` is built by Hydra, so a user's own model is one class
plus one yaml file."""
import dataclasses

import jax
import jax.numpy as jnp
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from zkynet import losses, optim
from zkynet.data import DatasetNotFoundError, Split
from zkynet.models.autoencoder import vae_loss

TASKS = {  # task -> (loss on graph nodes, metrics on arrays)
    "classification": (losses.softmax_cross_entropy, losses.classification_metrics),
    "regression": (losses.mse, None),
    "language_model": (losses.softmax_cross_entropy, losses.classification_metrics),  # per token
    "reconstruction": (losses.mse, None),  # targets are the inputs
    "vae": (vae_loss, None),  # the negative ELBO; targets are the inputs
}
SELF_SUPERVISED = ("reconstruction", "vae")
PRECISIONS = {"float32": jnp.float32, "float64": jnp.float64, "bfloat16": jnp.bfloat16}


class ConfigError(ValueError):
    """A setting has a value the run cannot use; the message names it."""


def input_layout(cfg):
    return cfg.model.get("input_layout", "flat")


def dataset(cfg):
    try:
        data = instantiate(cfg.dataset.loader, layout=input_layout(cfg))
    except InstantiationException as e:  # a missing download deserves its own plain message
        if isinstance(e.__cause__, DatasetNotFoundError):
            raise e.__cause__ from None
        raise
    dtype = precision(cfg)
    splits = {"train": _cast(data.train, dtype), "validation": _cast(data.validation, dtype)}
    if task_name(cfg) in SELF_SUPERVISED:
        splits = {name: Split(split.inputs, split.inputs) for name, split in splits.items()}
    return dataclasses.replace(data, **splits)


def _cast(split, dtype):
    """Floating arrays of a split in the run's precision (integer labels and tokens stay)."""
    as_dtype = lambda a: a.astype(dtype) if a.dtype.kind == "f" else a  # noqa: E731
    return dataclasses.replace(split, inputs=as_dtype(split.inputs), targets=as_dtype(split.targets))


def model(cfg):
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    for key in ("input_layout", "task"):  # about how the run feeds the model, not its constructor
        spec.pop(key, None)
    built = instantiate(spec)
    dtype = precision(cfg)
    for p in built.named_parameters().values():
        if jnp.issubdtype(p.value.dtype, jnp.floating):
            p.value = p.value.astype(dtype)
    return built


def optimizer(cfg, total_steps):
    """The optimizer with its learning rate following trainer.lr_schedule."""
    lr, warmup = cfg.optimizer.lr, cfg.trainer.warmup_steps
    if not lr > 0:
        raise ConfigError(f"optimizer.lr must be positive, got {lr}")
    if _name(cfg.trainer.lr_schedule) == "cosine":
        schedule = optim.Cosine(lr, max(total_steps - warmup, 1))
    else:
        schedule = optim.Constant(lr)
    if warmup:
        schedule = optim.Warmup(schedule, warmup)
    return instantiate(cfg.optimizer, lr=schedule)


def task_name(cfg):
    """The model's task if its config names one (an autoencoder reconstructs any
    dataset), else the dataset's."""
    return cfg.model.get("task") or cfg.dataset.task


def task(cfg):
    name = task_name(cfg)
    if name not in TASKS:
        raise ConfigError(f"the task must be one of {', '.join(TASKS)}, got {name!r}")
    return TASKS[name]


def precision(cfg):
    name = _name(cfg.trainer.precision)
    if name == "float64":
        jax.config.update("jax_enable_x64", True)
    return PRECISIONS[name]


def _name(choice):
    """A schema enum's name (or a plain string, when the config has no schema)."""
    return getattr(choice, "name", choice)
