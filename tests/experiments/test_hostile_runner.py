"""The runner under careless and hostile input: every refusal names what to fix and
comes before an MLflow run exists (the model, the data and the optimizer are built
first); files that cannot be read are named; the store itself failing is said
plainly, within seconds. (What only training finds out, a loss turning NaN, ends
the run FAILED with the reason: tests/experiments/test_run.py.)"""

import re
import subprocess
import sys
import time

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from experiments.schema import ConfigError
from experiments.tracking import TrackingError
from tests.experiments.conftest import ROOT
from zkynet.checkpoint import CheckpointError
from zkynet.data import DatasetFileError

REFUSED = [  # (overrides, what the message must say); refused before any MLflow run exists
    (["trainer.epochs=-1"], "trainer.epochs must be at least 1, got -1"),
    (["trainer.eval_batch_size=0"], "trainer.eval_batch_size must be at least 1, got 0"),
    (["trainer.warmup_steps=-5"], "trainer.warmup_steps must be at least 0, got -5"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps must be at least 1, got 0"),
    (["trainer.checkpoint_every_n_epochs=0"], "trainer.checkpoint_every_n_epochs must be at least 1, got 0"),
    (["trainer.checkpoint_min_seconds=-1"], "trainer.checkpoint_min_seconds must be at least 0, got -1"),
    (["trainer.devices=-1"], "trainer.devices must be at least 0, got -1"),
    (["optimizer.lr=0"], "optimizer.lr must be a positive number, got 0"),
    (["optimizer.lr=nan"], "optimizer.lr must be a positive number, got nan"),
    (["optimizer.lr=inf"], "optimizer.lr must be a positive number, got inf"),
    (["optimizer.lr=true"], "optimizer.lr must be a positive number, got True"),
    (["optimizer.b1=1.5"], "optimizer (zkynet.optim.Adam): ValueError: b1 must be in [0, 1), got 1.5"),
    (["optimizer.b2=-0.1"], "b2 must be in [0, 1), got -0.1"),
    (["optimizer.eps=0"], "eps must be a positive number, got 0"),
    (["optimizer.weight_decay=-1"], "weight_decay must be a number >= 0, got -1"),
    (["optimizer.clip_norm=0"], "clip_norm must be a positive number or None, got 0"),
    (["optimizer=sgd", "optimizer.momentum=1"], "optimizer (zkynet.optim.SGD): ValueError: momentum must be in [0, 1)"),
    (["optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=true"], "Nesterov momentum needs momentum > 0"),
    (["optimizer=adamw", "optimizer.weight_decay=-0.1"], "weight_decay must be a number >= 0, got -0.1"),
    (["seed=abc"], "seed must be a non-negative integer, got 'abc'"),
    (["seed=-1"], "seed must be a non-negative integer, got -1"),
    (["seed=1.5"], "seed must be a non-negative integer, got 1.5"),
    (["tracking.experiment="], "tracking.experiment must name an MLflow experiment"),
    (
        ["model.widths=[64,-3,10]"],
        "model (zkynet.models.fcn.MLP): ValueError: cannot make a parameter of shape "
        "(64, -3): every size must be at least 1",
    ),
    (["model.widths=[64,0,10]"], "cannot make a parameter of shape (64, 0)"),
    (["model.dropout=1.5"], "model (zkynet.models.fcn.MLP): ValueError: dropout rate must be in [0, 1), got 1.5"),
    (["model.dropout=-0.1"], "dropout rate must be in [0, 1), got -0.1"),
    (["+tracking.experment=x"], "unknown setting tracking.experment; did you mean tracking.experiment?"),
    (["+sed=3"], "unknown setting sed; did you mean seed?"),
    (["task.mode=maximize"], "mode must be 'min' or 'max', got 'maximize'"),
    (
        ["trainer.resume=abc", "tracking.enabled=false"],
        "trainer.resume continues an MLflow run: it needs tracking.enabled=true",
    ),
    (["tracking.graph_depth=abc"], "tracking.graph_depth must be null, auto or an integer >= 0, got 'abc'"),
    (["tracking.graph_depth=-1"], "tracking.graph_depth must be null, auto or an integer >= 0, got '-1'"),
    # what the data or the machine decides, still before a run exists (the data is read first)
    (["trainer.warmup_steps=100000"], "trainer.warmup_steps=100000 is not less than the run's 22 steps"),
    (
        ["trainer.batch_size=100000"],
        "trainer.batch_size=100000 is more than the 1438 training examples of dataset digits",
    ),
    (["trainer.devices=64"], "trainer.devices=64: this machine has"),
]


@pytest.mark.parametrize("overrides, message", REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_a_setting_a_run_cannot_use_is_refused_by_name_before_a_run_exists(runner, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        runner("trainer.epochs=1", *overrides)
    assert runner.runs() == []


NOT_COMPOSED = [  # Hydra's own refusals, at composition: its message names the option and the choices
    ("trainer.lr_schedule=linear", "Invalid value 'linear', expected one of [constant, cosine]"),
    ("trainer.jit=maybe", "Value 'maybe' is not a valid bool"),
    ("dataset=digitz", "Could not find 'dataset/digitz'"),
    ("optimizer=adamm", "Could not find 'optimizer/adamm'"),
    ("tracking.log_graph=sometimes", "Value 'sometimes' is not a valid bool"),
]


@pytest.mark.parametrize("override, message", NOT_COMPOSED)
def test_a_value_of_the_wrong_kind_is_hydras_error_naming_it(runner, override, message):
    with pytest.raises((HydraException, OmegaConfBaseException)) as refused:
        runner.config(override)
    assert message in "".join(str(e) for e in (refused.value, refused.value.__cause__) if e is not None)


@pytest.mark.parametrize(
    "content", [b"", b"label,pixel0\n3,0\n", b"\x00\xff\x00garbage\n\x01"], ids=["empty", "wrong columns", "binary"]
)
def test_a_dataset_file_that_cannot_be_read_is_named(runner, tmp_path, content):
    folder = tmp_path / "datasets" / "mnist"
    folder.mkdir(parents=True)
    for name in ("mnist_train.csv", "mnist_test.csv"):
        (folder / name).write_bytes(content)
    with pytest.raises(DatasetFileError) as refused:
        runner("dataset=mnist", f"dataset.loader.root={tmp_path / 'datasets'}", "trainer.epochs=1")
    assert str(folder / "mnist_train.csv") in str(refused.value)
    assert "./download_datasets.sh mnist" in str(refused.value)
    assert runner.runs() == []  # the data is read before an MLflow run exists


def test_a_resume_from_a_damaged_checkpoint_names_it_and_leaves_the_run_as_it_was(runner):
    runner("trainer.epochs=1")
    (done,) = runner.runs()
    stored = done.info.artifact_uri.removeprefix("file://") + "/checkpoints/last.npz"
    with open(stored, "r+b") as f:
        f.truncate(100)  # cut short, as by a full disk or a copy that stopped
    with pytest.raises(CheckpointError, match=re.escape("cannot read the checkpoint")):
        runner(f"trainer.resume={done.info.run_id}", "trainer.epochs=2")
    assert runner.client.get_run(done.info.run_id).info.status == "FINISHED"


def test_an_unreachable_tracking_server_is_named_within_seconds(runner):
    started = time.perf_counter()
    with pytest.raises(TrackingError, match=re.escape("cannot reach the MLflow tracking server at http://127.0.0.1:9")):
        runner("tracking.uri=http://127.0.0.1:9", "trainer.epochs=1")
    assert time.perf_counter() - started < 15


def test_a_store_that_cannot_be_created_is_named(runner):
    with pytest.raises(TrackingError, match=re.escape("cannot use the MLflow store sqlite:////proc/zkynet/mlflow.db")):
        runner("tracking.uri=sqlite:////proc/zkynet/mlflow.db", "trainer.epochs=1")


def test_on_the_command_line_a_store_problem_is_one_line_not_a_traceback(cli):
    result = cli("tracking.uri=http://127.0.0.1:9", "trainer.epochs=1", timeout=120)
    assert result.returncode == 2
    assert "error: cannot reach the MLflow tracking server at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_runs_started_at_once_on_a_new_store_all_succeed_in_their_own_folders(cli, tmp_path):
    command = [
        sys.executable,
        "-m",
        "experiments.run",
        f"tracking.uri={cli.store}",
        "trainer.epochs=1",
        "trainer.progress=false",
        "tracking.log_graph=false",
        f"hydra.run.dir={tmp_path}/outputs/${{now:%Y-%m-%d}}/${{now:%H-%M-%S-%f}}",
    ]  # the default folders
    processes = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)
    ]
    outcomes = [p.communicate(timeout=600) + (p.returncode,) for p in processes]
    assert [code for _, _, code in outcomes] == [0] * 4, [err[-2000:] for _, err, _ in outcomes]
    folders = {re.search(r"files: (\S+)", out + err).group(1) for out, err, _ in outcomes}
    assert len(folders) == 4
    assert sorted(r.info.status for r in cli.runs()) == ["FINISHED"] * 4
