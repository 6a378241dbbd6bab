"""The Hydra side of zkynet's Ray Tune sweeper (conf/hydra/sweeper/tune.yaml)."""

from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf


class TuneSweeper(Sweeper):
    def __init__(self, **settings):
        self.settings = OmegaConf.create(settings)
        self.hydra_context = self.config = None

    def setup(self, *, hydra_context, task_function, config):
        self.hydra_context, self.config = hydra_context, config

    def sweep(self, arguments):
        from experiments.tune_sweep import TuneSweep  # Ray Tune loads only when a sweep runs

        return TuneSweep(self.settings, self.hydra_context, self.config).run(arguments)
