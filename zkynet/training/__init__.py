"""Training for zkynet models: the Trainer loop and the callbacks that watch it.
Plain library code: no Hydra, no MLflow (the experiment runner adds those)."""
from zkynet.training.callbacks import (BestCheckpoint, Checkpointer, EarlyStopping, NanGuard, NonFiniteLossError,
                                      ProgressReport)
from zkynet.training.trainer import Callback, Trainer

__all__ = ["BestCheckpoint", "Callback", "Checkpointer", "EarlyStopping", "NanGuard", "NonFiniteLossError",
           "ProgressReport", "Trainer"]
