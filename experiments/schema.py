"""Typed schemas for config groups, so Hydra itself rejects a wrong type or value
(`trainer.epochs=many`, `trainer.precision=float16`) before any training code runs."""
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from hydra.core.config_store import ConfigStore


class Precision(Enum):
    float32 = "float32"
    float64 = "float64"
    bfloat16 = "bfloat16"


class Schedule(Enum):
    constant = "constant"
    cosine = "cosine"


@dataclass
class Trainer:
    epochs: int = 20
    batch_size: int = 64
    eval_batch_size: int = 512
    lr_schedule: Schedule = Schedule.cosine
    warmup_steps: int = 0
    log_every_n_steps: int = 10
    checkpoint_every_n_epochs: int = 1
    checkpoint_min_seconds: float = 30.0
    precision: Precision = Precision.float32
    jit: bool = True
    progress: bool = True
    resume: Optional[str] = None


@dataclass
class Tracking:
    enabled: bool = True
    uri: Optional[str] = None
    experiment: str = "zkynet"
    log_graph: bool = True
    graph_depth: Optional[str] = "auto"


def register():
    store = ConfigStore.instance()
    store.store(group="trainer", name="schema", node=Trainer)
    store.store(group="tracking", name="schema", node=Tracking)
