"""Config -> objects: the task, dataset, model, optimizer and callbacks a run
trains with. Anything with a `_target_` is built by Hydra, so a user's own
model, task or callback is one class plus one yaml file."""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf, open_dict

from experiments.schema import ConfigError
from zkynet import optim
from zkynet.data import DatasetFileError, DatasetNotFoundError, files
from zkynet.framework.compile import PRECISIONS as STEP_PRECISIONS
from zkynet.framework.compile import Objective
from zkynet.tasks import Task
from zkynet.training import trainer

# trainer.precision -> the dtype of the weights (for bf16: the float32 master weights) and of the data
DTYPES = {"float32": jnp.float32, "float64": jnp.float64, "bf16": jnp.float32, "bfloat16": jnp.float32}
NOT_CONSTRUCTOR_ARGUMENTS = ("input_layout",)  # how the run feeds the model, read here


def task(cfg) -> Task:
    built = _instantiate(cfg.task, "task")
    if not isinstance(built, Task):
        raise ConfigError(f"task: {cfg.task._target_} made a {type(built).__name__}, not a zkynet.tasks.Task")
    return built


def dataset(cfg, task):
    """The dataset as `task` trains on it, floating arrays in the run's dtype. A loader
    of your own (a `_target_` outside zkynet) is called with `layout` if it takes one,
    and what it returns is checked against the dataset contract (zkynet.data.files)."""
    layout = cfg.model.get("input_layout", "flat")
    target = cfg.dataset.loader.get("_target_")
    own = isinstance(target, str) and not target.startswith("zkynet.")
    try:
        arguments = {"layout": layout} if not own or _takes_layout(target) else {}
        data = instantiate(cfg.dataset.loader, **arguments)
    except InstantiationException as e:  # a missing or broken download deserves its own plain message
        if isinstance(e.__cause__, (DatasetNotFoundError, DatasetFileError)):
            raise e.__cause__ from None
        if (
            isinstance(e.__cause__, ValueError) and not own
        ):  # e.g. digits asked for token ids (model.input_layout=tokens)
            raise ConfigError(
                f"dataset {cfg.dataset.name} for model {cfg.model._target_.rsplit('.', 1)[-1]}: "
                f"{e.__cause__}; pick a dataset that fits (dataset=...)"
            ) from None
        cause = e.__cause__ or e
        raise DatasetFileError(f"dataset.loader ({target}) failed: {type(cause).__name__}: {cause}") from e
    if own:
        data = files.checked(data, cfg.dataset.get("name") or target, layout, f"dataset.loader ({target})")
    dtype = weights_dtype(cfg)
    data = dataclasses.replace(
        data,
        train=_cast(data.train, dtype),
        validation=_cast(data.validation, dtype),
        test=None if data.test is None else _cast(data.test, dtype),
    )
    return task.data(data)


def _cast(split, dtype):
    """Floating arrays of a split in `dtype` (integer labels and tokens stay; an array
    read from a file is cast as it is read)."""

    def as_dtype(a):
        return a.astype(dtype) if a.dtype.kind == "f" and a.dtype != dtype else a

    return dataclasses.replace(split, inputs=as_dtype(split.inputs), targets=as_dtype(split.targets))


def check_finite(data):
    """NaN or inf in the data, refused before any run exists, naming where."""
    try:
        trainer.check_finite(data)
    except ValueError as e:
        raise DatasetFileError(str(e)) from None


def _takes_layout(target):
    try:
        parameters = inspect.signature(get_method(target)).parameters
    except Exception:  # not importable: instantiate names that below
        return False
    return "layout" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def with_data_shapes(cfg, data):
    """`cfg` with dataset.features, outputs and image_shape read from `data` where the
    dataset's config leaves them null (your own data: the model's config reads them)."""
    unset = [key for key in ("features", "outputs", "image_shape") if key in cfg.dataset and cfg.dataset[key] is None]
    if not unset:
        return cfg
    found = files.describe(data, cfg.model.get("input_layout", "flat"))
    with open_dict(cfg):
        for key in unset:
            cfg.dataset[key] = found[key]
    return cfg


def check_fit(model, task, data, cfg):
    """The task's loss of the model on two training examples, computed once before any run
    exists: a model whose outputs do not fit the task or the data (task=regression with
    a classifier, an MLP on token ids) is refused here, naming the three."""
    inputs, targets = data.train.inputs[:2], data.train.targets[:2]
    try:
        return Objective(model, task.loss)(inputs, targets)
    except Exception as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(
            f"model {type(model).__name__} (model={_choice(cfg.model)}) does not fit task {task.name} on dataset "
            f"{data.name} (inputs {tuple(inputs.shape[1:])} {inputs.dtype}, targets {tuple(targets.shape[1:])} "
            f"{targets.dtype}): {type(e).__name__}: {message}; pick a model, dataset and task that fit "
            "(a preset: +experiment=...)"
        ) from e


def _choice(node):
    return node.get("_target_", "?").rsplit(".", 1)[-1]


def model_spec(cfg):
    """The model's `_target_` and constructor arguments, resolved (what zkynet.load builds)."""
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(spec, dict)  # a model's config is a mapping
    for key in NOT_CONSTRUCTOR_ARGUMENTS:
        spec.pop(key, None)
    return spec


def model(cfg):
    _check_dataset_references(cfg)
    built = _instantiate(model_spec(cfg), "model")
    dtype = weights_dtype(cfg)
    for p in built.named_parameters().values():
        if jnp.issubdtype(p.value.dtype, jnp.floating):
            p.value = p.value.astype(dtype)
    return built


def _check_dataset_references(cfg):
    """A model setting that reads a dataset setting the dataset does not have (null: a CNN's
    input_shape from dataset.image_shape on a sequence task) is refused by name."""
    for key in cfg.model:
        node = cfg.model._get_node(key)
        if node is None or not OmegaConf.is_interpolation(cfg.model, key):
            continue
        text = str(node._value())
        if "dataset." in text and OmegaConf.select(cfg, f"model.{key}") is None:
            raise ConfigError(
                f"model.{key} is {text}, which dataset {cfg.dataset.get('name', '?')} does not give (null): model "
                f"{_choice(cfg.model)} does not fit it; pick a dataset that fits (dataset=...) or a preset "
                "(+experiment=...)"
            )


def steps(cfg, dataset):
    """How many optimizer steps the run takes; refused when no full batch fits the data."""
    examples, batch_size = len(dataset.train), cfg.trainer.batch_size
    if batch_size > examples:
        raise ConfigError(
            f"trainer.batch_size={batch_size} is more than the {examples} training examples of "
            f"dataset {dataset.name}: no full batch"
        )
    return cfg.trainer.epochs * (examples // batch_size)


def optimizer(cfg, total_steps):
    """The optimizer with its learning rate following trainer.lr_schedule."""
    lr, warmup = cfg.optimizer.lr, cfg.trainer.warmup_steps
    if warmup >= total_steps:
        raise ConfigError(
            f"trainer.warmup_steps={warmup} is not less than the run's {total_steps} steps: "
            "its learning rate would never reach optimizer.lr"
        )
    schedule: optim.Schedule
    if _name(cfg.trainer.lr_schedule) == "cosine":
        schedule = optim.Cosine(lr, max(total_steps - warmup, 1))
    else:
        schedule = optim.Constant(lr)
    if warmup:
        schedule = optim.Warmup(schedule, warmup)
    return _instantiate(cfg.optimizer, "optimizer", lr=schedule)


def check_devices(cfg):
    available = jax.local_devices()
    if cfg.trainer.devices > len(available):
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices}: this machine has {len(available)} "
            f"({available[0].platform}); on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
            "makes N"
        )


def callbacks(cfg):
    """conf/callbacks/, in the order written (a null entry is left out)."""
    return [_instantiate(spec, f"callbacks.{name}") for name, spec in cfg.callbacks.items() if spec is not None]


def weights_dtype(cfg):
    name = _name(cfg.trainer.precision)
    if name == "float64":
        jax.config.update("jax_enable_x64", True)
    return DTYPES[name]


def step_precision(cfg):
    """The Trainer's precision: "bf16" (bfloat16 compute around float32 master weights),
    or "float32", which casts nothing (a float64 run's weights and data are float64)."""
    name = _name(cfg.trainer.precision)
    return name if name in STEP_PRECISIONS else "float32"


def _instantiate(spec, where, **arguments):
    """Hydra's instantiate, its failures a ConfigError naming the config group and the
    constructor's own message (not Hydra's wrapper around it)."""
    try:
        return instantiate(spec, **arguments)
    except InstantiationException as e:
        cause = e.__cause__
        reason = f"{type(cause).__name__}: {cause}" if isinstance(cause, (ValueError, TypeError)) else str(e)
        raise ConfigError(f"{where} ({spec.get('_target_', '?')}): {reason}") from e


def _name(choice):
    """A schema enum's name (or a plain string, when the config has no schema)."""
    return getattr(choice, "name", choice)
