"""Training for zkynet models: the Trainer loop, the callbacks that watch it, and
populations (K models of one architecture trained as one program).
Plain library code: no Hydra, no MLflow (the experiment runner adds those)."""

from zkynet.training.callbacks import (
    BestCheckpoint,
    Checkpointer,
    EarlyStopping,
    NanGuard,
    NonFiniteLossError,
    ProgressReport,
)
from zkynet.training.population import PopulationStep, PopulationTrainer
from zkynet.training.trainer import Callback, Trainer, TrainingLoop

__all__ = [
    "BestCheckpoint",
    "Callback",
    "Checkpointer",
    "EarlyStopping",
    "NanGuard",
    "NonFiniteLossError",
    "PopulationStep",
    "PopulationTrainer",
    "ProgressReport",
    "Trainer",
    "TrainingLoop",
]
