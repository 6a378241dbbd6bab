"""How a sweep's Tune trials are named (`trial_7`), and the trial number in a name:
the driver names them, the driver's books and the workers read the numbers back."""

from typing import Any


def trial_name(trial: Any) -> str:
    """`trial_7` for Tune's trial number 7 (the index its search gave it: from 0 for
    grid and random search, from 1 for a searcher such as Optuna's)."""
    return f"trial_{trial.experiment_tag.split('_', 1)[0]}"


def trial_number(name: str) -> int:
    return int(name.rsplit("_", 1)[-1])
