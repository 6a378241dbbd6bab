"""Running zkynet: the experiment runner, training loop, tracking and benchmarks.

In Python, what `python -m experiments.run [overrides]` does:

    import experiments
    cfg = experiments.compose(overrides=["model=mlp", "trainer.epochs=3"])
    result = experiments.run(cfg)  # a RunResult: run_id, status, metrics, model, checkpoints

Importing this package imports nothing heavy and changes nothing in the process.
"""

from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"

__all__ = ["CONF", "compose", "run"]


def compose(config_name="config", overrides=()):
    """The configuration `python -m experiments.run *overrides` would run, composed with
    Hydra's compose API from the project's conf/ (its schemas registered first), with
    the overrides recorded (launch.overrides) as the command line records them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from experiments import schema

    overrides = list(overrides)
    schema.register()
    if GlobalHydra.instance().is_initialized():  # inside someone else's Hydra context: ours for this call
        previous = GlobalHydra.instance().hydra
        GlobalHydra.instance().clear()
    else:
        previous = None
    try:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=overrides)
    finally:
        if previous is not None:
            GlobalHydra.instance().initialize(previous)
    with open_dict(cfg):
        cfg.launch.overrides = overrides
    return cfg


def run(cfg, **arguments):
    """Train as `cfg` says (experiments.runner.run): returns an experiments.RunResult."""
    from experiments.runner import run as run_config

    return run_config(cfg, **arguments)


def __getattr__(name):
    if name == "RunResult":
        from experiments.finish import RunResult

        return RunResult
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")
