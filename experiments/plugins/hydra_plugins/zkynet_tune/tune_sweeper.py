"""The Hydra side of zkynet's Ray Tune sweeper (conf/hydra/sweeper/tune.yaml, typed by
experiments.sweep.settings)."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from experiments.sweep import settings


class TuneSweeper(Sweeper):
    def __init__(self, **hydra_sweeper: Any):
        self.settings = settings.from_hydra(hydra_sweeper)
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config

    def sweep(self, arguments: list[str]) -> Any:
        from experiments.sweep.driver import TuneSweep  # Ray Tune loads only when a sweep runs

        assert self.hydra_context is not None and self.config is not None, "Hydra calls setup() before sweep()"
        return TuneSweep(self.settings, self.hydra_context, self.config).run(arguments)
