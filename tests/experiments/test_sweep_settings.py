"""What a sweep refuses before any trial, in one line: sweeper settings out of range
(our schema, not Ray's assertions), resources no node of the cluster has; and that a
signal at any moment ends the sweep's runs and the Ray it started."""

import os
import re
import signal
import time
from pathlib import Path

import pytest

from experiments.sweep import settings
from experiments.sweep.settings import SweeperSettingsError
from tests.experiments.test_sweep import QUIET, ROOT, sweep, sweep_runs


@pytest.mark.parametrize(
    "given, message",
    [
        ({"asha": {"grace_period": 0}}, "hydra.sweeper.asha.grace_period must be a positive integer"),
        ({"asha": {"reduction_factor": 1}}, "hydra.sweeper.asha.reduction_factor must be a number > 1"),
        ({"pbt": {"interval": 0}}, "hydra.sweeper.pbt.interval must be a positive integer"),
        ({"pbt": {"quantile_fraction": 0.7}}, "hydra.sweeper.pbt.quantile_fraction must be in (0, 0.5]"),
        ({"pbt": {"resample_probability": 1.5}}, "hydra.sweeper.pbt.resample_probability must be in [0, 1]"),
        ({"num_samples": 0}, "hydra.sweeper.num_samples must be a positive integer"),
        ({"max_concurrent": 0}, "hydra.sweeper.max_concurrent must be a positive integer"),
        ({"max_failures": -2}, "hydra.sweeper.max_failures must be an integer >= -1"),
        ({"resources": {"cpu": -1}}, "hydra.sweeper.resources.cpu must be a number >= 0"),
        ({"resources": {"gpu": 1.5}}, "hydra.sweeper.resources.gpu must be auto, a whole number of GPUs"),
        ({"resources": {"gpu": "many"}}, "hydra.sweeper.resources.gpu must be auto"),
        ({"resources": {"cpu": 0, "gpu": 0}}, "a trial must ask for some CPU or GPU"),
        ({"pack": 0}, "hydra.sweeper.pack must be a positive integer or auto"),
        ({"search": "optuna", "pack": 4}, "Bayesian search picks each trial from the results so far"),
        ({"search": "optuna", "scheduler": "pbt"}, "population-based training explores by itself"),
        ({"ray": {"num_cpus": 0}}, "hydra.sweeper.ray.num_cpus must be a positive integer"),
    ],
)
def test_sweeper_settings_out_of_range_are_refused_naming_the_setting(given, message, tmp_path):
    typed = settings.from_hydra(given)
    with pytest.raises(SweeperSettingsError, match=re.escape(message)):
        settings.check(typed, ["optimizer.lr"], tmp_path)


@pytest.mark.parametrize("setting", ["hydra.sweeper.asha.grace_period=0", "hydra.sweeper.pbt.interval=0"])
def test_a_setting_ray_would_assert_on_is_one_line_before_any_run(cli, setting):
    result = sweep(cli, setting, "optimizer.lr=1e-3,3e-3")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {setting.split('=')[0]} must be")
    assert cli.runs() == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "asked, named",
    [("hydra.sweeper.resources.cpu=100", "resources.cpu=100"), ("hydra.sweeper.resources.gpu=1", "resources.gpu=1")],
)
def test_resources_no_node_has_are_refused_before_any_trial_naming_what_it_has(cli, on_cluster, asked, named):
    """Ray would wait for them forever, printing its autoscaler's hint."""
    cluster, env = on_cluster
    result = sweep(cli, asked, "trainer.epochs=1", "seed=0,1", *cluster, env=env, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert named in line and "its node: 2 CPU, 0 GPU" in line, line
    parent, trials = sweep_runs(cli)
    assert trials == {} and parent.info.status == "FAILED"


def ray_processes(mark):
    """The processes whose environment holds `mark` (a sweep's, and Ray's it started)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if mark.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["while Ray starts", "while trials train"])
def test_sigterm_at_any_moment_ends_the_sweeps_runs_and_its_ray(cli, moment, tmp_path):
    """A sweep on a local Ray of its own, SIGTERM once its run exists (Ray still starting)
    or once a trial trains: it exits 130, no run is left RUNNING, and none of the
    processes it started is alive."""
    mark = f"ZKYNET_TEST_SWEEP_{os.getpid()}_{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": ROOT, mark: "1"}
    process = cli.start("-m", *QUIET, "trainer.epochs=300", "seed=0,1", "hydra.sweeper.ray.num_cpus=2", env=env)
    wanted = "one child run per trial" if moment == "while Ray starts" else "[trial "
    seen = ""
    deadline = time.monotonic() + 300
    while wanted not in seen and time.monotonic() < deadline:
        seen += process.stderr.readline()
    assert wanted in seen, seen
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, seen + rest
    assert "resume it with" in rest
    assert all(r.info.status != "RUNNING" for r in cli.runs()) and cli.runs()
    deadline = time.monotonic() + 30
    while ray_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_processes(mark) == []
