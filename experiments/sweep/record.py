"""What a sweep was run with (sweep.json in its folder), and what a resume may change
(in the driver).

A resume (`hydra.sweeper.resume=true` on the sweep's folder) must describe the same
sweep: the same overrides, search, seed, scheduler and packing. It may add trials: a
larger `num_samples`, or more values of a swept choice (every recorded one kept). It
may run them elsewhere: resources, concurrency, retries and the Ray cluster are free.
Anything else is refused before anything changes, naming each difference.
"""

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from experiments.sweep import space as search_space
from experiments.sweep.settings import RECORD, SweeperSettings

# the sweeper's settings a resume must keep (num_samples may grow; the rest is free)
KEPT = ("search", "seed", "scheduler", "pack", "asha", "pbt")


class ResumeError(ValueError):
    """A resume that does not describe the recorded sweep; the message names each difference."""


def of(arguments: list[str], settings: SweeperSettings, experiments: list[str]) -> dict[str, Any]:
    """The record of a sweep: its overrides, the settings a resume must keep, its Tune experiments."""
    container = OmegaConf.to_container(OmegaConf.structured(settings), enum_to_str=True)
    assert isinstance(container, dict)
    return {
        "arguments": list(arguments),
        "settings": {key: container[key] for key in (*KEPT, "num_samples")},
        "experiments": list(experiments),
    }


def read(sweep_dir: Path) -> dict[str, Any]:
    return json.loads((sweep_dir / RECORD).read_text())


def write(sweep_dir: Path, record: dict[str, Any]) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    temporary = sweep_dir / f".{RECORD}.tmp"
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    temporary.replace(sweep_dir / RECORD)


def check_resume(recorded: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse (ResumeError) a resume whose sweep differs from the recorded one other than
    by added trials."""
    differences = _setting_differences(recorded["settings"], now["settings"])
    differences += _argument_differences(recorded["arguments"], now["arguments"])
    if differences:
        raise ResumeError(
            "hydra.sweeper.resume=true continues the sweep recorded in its folder, which was run "
            f"differently: {'; '.join(differences)} (a resume may only add trials: a larger "
            "hydra.sweeper.num_samples, or more values of a swept choice)"
        )


def _setting_differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    found = [
        f"hydra.sweeper.{key}={_shown(now[key])}, recorded {_shown(recorded[key])}"
        for key in KEPT
        if recorded.get(key) != now.get(key)
    ]
    if now["num_samples"] < recorded["num_samples"]:
        found.append(
            f"hydra.sweeper.num_samples={now['num_samples']} is fewer than the recorded {recorded['num_samples']}"
        )
    return found


def _argument_differences(recorded: list[str], now: list[str]) -> list[str]:
    before, after = search_space.parse(recorded), search_space.parse(now)
    found = [f"{o} was not in the sweep" for o in after.fixed if o not in before.fixed]
    found += [f"{o} is missing" for o in before.fixed if o not in after.fixed]
    for key in sorted(set(before.choices) | set(after.choices) | set(before.intervals) | set(after.intervals)):
        if key in before.intervals or key in after.intervals:
            if before.intervals.get(key) != after.intervals.get(key):
                found.append(f"{key}: {_swept(after, key)}, recorded {_swept(before, key)}")
            continue
        if key not in after.choices or key not in before.choices:
            found.append(f"{key}: {_swept(after, key)}, recorded {_swept(before, key)}")
            continue
        missing = [v for v in before.choices[key] if v not in after.choices[key]]
        if missing:
            found.append(f"{key} misses the recorded value(s) {', '.join(map(str, missing))}")
    return found


def _swept(space: search_space.SearchSpace, key: str) -> str:
    if key in space.choices:
        return ",".join(map(str, space.choices[key]))
    if key in space.intervals:
        low, high, tags = space.intervals[key]
        return f"{''.join(f'{t} ' for t in sorted(tags))}interval({low:g}, {high:g})"
    return "not swept"


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)
