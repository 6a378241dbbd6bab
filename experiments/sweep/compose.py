"""A trial's configuration, composed as the command line would (in the workers).

Hydra composes a configuration from its files on every call (a quarter of a second
here: most of a warm trial's start once its steps are compiled). A sweep's trials
differ in a few values, so a worker composes once for each choice of config groups
(and of overrides it cannot set itself: `+key`, `~key`), and gives every trial a
copy with its swept values set as Hydra sets an override's value (typed by Hydra's
parser, merged into the config, checked against its schema). A value the config
refuses is composed by Hydra after all, so that the trial fails with Hydra's own
message."""

import copy

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf


class Composer:
    """One worker's composed configurations, by the overrides Hydra must compose."""

    def __init__(self) -> None:
        self.bases: dict[tuple[str, ...], DictConfig] = {}

    def __call__(
        self, hydra_context: HydraContext, master: DictConfig, overrides: list[str], swept: list[str]
    ) -> DictConfig:
        groups = set(master.hydra.runtime.choices)
        composed, values = [], {}
        for text, override in zip(overrides, OverridesParser.create().parse_overrides(overrides), strict=True):
            key = override.get_key_element()
            if key in swept and key not in groups and override.type == OverrideType.CHANGE:
                values[key] = override.value()
            else:
                composed.append(text)
        base = self.bases.get(tuple(composed))
        if base is None:
            base = self.bases[tuple(composed)] = hydra_context.config_loader.load_sweep_config(master, overrides)
        cfg = copy.deepcopy(base)
        try:
            for key, value in values.items():
                OmegaConf.update(cfg, key, value, merge=True)
        except Exception:  # refused: Hydra says why, as for any trial
            return hydra_context.config_loader.load_sweep_config(master, overrides)
        return cfg
