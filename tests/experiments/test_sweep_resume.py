"""Interrupted sweeps record what happened (KILLED, never FINISHED or stopped early) and
resume into the same runs; Optuna's searcher goes on where it stopped; a resume may add
trials, and nothing else."""

import re
import subprocess
from pathlib import Path

import pytest
from ray import tune

from tests.experiments.test_sweep import QUIET, ROOT, sweep, sweep_runs

SWEEP_FIXTURES = "tests.fixtures.sweep_callbacks"


def interrupted_sweep(cli, tmp_path, env, *overrides, trial, after, hold=False):
    """A sweep whose `trial`-th trial to start sends its driver SIGTERM after epoch `after`
    and trains on (Tune stops it at its next report; with `hold`, the other trials wait for
    that signal at their epoch `after`); (its stderr, the resume command)."""
    pid_file = tmp_path / "driver.pid"
    process = cli.start(
        "-m",
        *QUIET,
        *overrides,
        f"+callbacks.stop._target_={SWEEP_FIXTURES}.SignalDriverAtTrial",
        f"+callbacks.stop.trial={trial}",
        f"+callbacks.stop.after={after}",
        f"+callbacks.stop.pid_file={pid_file}",
        f"+callbacks.stop.count_file={tmp_path / 'started'}",
        f"+callbacks.stop.marker={tmp_path / 'signalled'}",
        f"+callbacks.stop.hold={hold}",
        env=env,
    )
    pid_file.write_text(str(process.pid))
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 130, stderr
    return stderr, re.search(r"resume it with:\n  (.*)", stderr).group(1)


def resume(command, env, *more):
    """The printed command, run as printed (plus `more`), in the sweep's environment."""
    return subprocess.run(
        " ".join([command, *more]), shell=True, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )


def steps(cli, run, key="val_loss"):
    return [m.step for m in cli.client.get_metric_history(run.info.run_id, key)]


@pytest.mark.slow
def test_an_interrupted_sweep_ends_its_trials_killed_and_resumes_them_in_their_runs(cli, tmp_path, on_cluster):
    """SIGTERM while two trials train: both were training, so both end KILLED (not FINISHED,
    not stopped early: no scheduler stopped them), each with a checkpoint of the epoch it
    stopped at; the third never started. The resume continues both in their own runs
    (every epoch logged once) and trains the third; the ranking lists three trials."""
    cluster, env = on_cluster
    stderr, command = interrupted_sweep(
        cli,
        tmp_path,
        env,
        "hydra.sweeper.max_concurrent=2",
        "trainer.epochs=20",
        "seed=0,1,2",
        *cluster,
        trial=2,
        after=2,
        hold=True,
    )
    assert "Tuner.restore" not in stderr and "Stop signal received" not in stderr  # Tune's advice is not ours
    parent, trials = sweep_runs(cli)
    assert parent.info.status == "KILLED" and sorted(trials) == [1, 2]
    for run in trials.values():
        assert run.info.status == "KILLED" and "stopped_early" not in run.data.tags, run.data.tags
        assert 2 <= run.data.metrics["epoch"] < 20
    assert all(r.info.status != "RUNNING" for r in cli.runs())
    assert "hydra.sweeper.resume=true" in command and "hydra.sweeper.max_concurrent=2" in command

    resumed = resume(command, env)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 to continue, 1 new" in resumed.stderr
    parent, trials = sweep_runs(cli)
    assert parent.info.status == "FINISHED" and sorted(trials) == [1, 2, 3]
    assert len(cli.runs()) == 4  # the sweep's run and one per trial
    for number, run in trials.items():
        assert run.info.status == "FINISHED" and "stopped_early" not in run.data.tags
        assert steps(cli, run) == sorted(set(steps(cli, run))) and len(steps(cli, run)) == 20, number
        assert run.data.tags.get("attempts") == ("2" if number < 3 else None)
    table = cli.client.download_artifacts(parent.info.run_id, "sweep.md", str(tmp_path))
    rows = [line for line in Path(table).read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    assert sorted(int(row.split("|")[2]) for row in rows) == [1, 2, 3]


def optuna_suggestions(count, seed=0):
    """What Tune's OptunaSearch suggests for the sweep below, in order: its first trials
    are TPE's random start-up draws, which no result changes."""
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(
        space={"optimizer.lr": tune.loguniform(1e-4, 1e-2)}, metric="val_loss", mode="min", seed=seed
    )
    return [searcher.suggest(str(i))["optimizer.lr"] for i in range(count)]


@pytest.mark.slow
def test_optuna_goes_on_where_it_stopped_and_a_resume_adds_samples(cli, tmp_path, on_cluster):
    """Optuna, one trial at a time; the third is interrupted. Resuming with num_samples=5
    continues the third in its run with its values, then asks Optuna for two more: the
    fourth and fifth suggestions of the searcher's own sequence (its state survived: no
    suggestion repeated, none lost)."""
    cluster, env = on_cluster
    space = ("hydra.sweeper.search=optuna", "optimizer.lr=tag(log, interval(1e-4, 1e-2))", "trainer.epochs=3")
    _, command = interrupted_sweep(
        cli,
        tmp_path,
        env,
        *space,
        "hydra.sweeper.num_samples=4",
        "hydra.sweeper.max_concurrent=1",
        *cluster,
        trial=3,
        after=1,
    )
    _, trials = sweep_runs(cli)
    assert [trials[n].info.status for n in sorted(trials)] == ["FINISHED", "FINISHED", "KILLED"]

    resumed = resume(command.replace("hydra.sweeper.num_samples=4", "hydra.sweeper.num_samples=5"), env)
    assert resumed.returncode == 0, resumed.stderr
    parent, trials = sweep_runs(cli)
    assert parent.info.status == "FINISHED" and sorted(trials) == [1, 2, 3, 4, 5]
    assert all(r.info.status == "FINISHED" for r in trials.values())
    assert trials[3].data.tags["attempts"] == "2" and len(steps(cli, trials[3])) == 3
    rates = [float(trials[n].data.params["optimizer/lr"]) for n in range(1, 6)]
    assert rates == optuna_suggestions(5)


@pytest.mark.slow
def test_a_resume_adds_trials_and_refuses_another_sweep(cli, tmp_path, on_cluster):
    """A finished grid of two; resumed with a third value and two samples: four new trials
    under the same sweep run, the first two not trained again. A resume with another
    override, or of a folder without a sweep, is refused naming it, and changes nothing."""
    cluster, env = on_cluster
    first = sweep(cli, "trainer.epochs=1", "optimizer.lr=1e-3,3e-3", *cluster, env=env)
    assert first.returncode == 0, first.stderr
    parent, before = sweep_runs(cli)
    folder = parent.data.tags["sweep"]
    common = (*QUIET, "trainer.epochs=1", *cluster, f"hydra.sweep.dir={folder}", "hydra.sweeper.resume=true")

    refused = cli("-m", *common, "optimizer.lr=1e-3,3e-3", "model.dropout=0.1", env=env)
    assert refused.returncode == 2 and "model.dropout=0.1 was not in the sweep" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    refused = cli("-m", *common, "optimizer.lr=3e-3,1e-2", env=env)
    assert refused.returncode == 2 and "optimizer.lr misses the recorded value(s) 0.001" in refused.stderr
    nowhere = cli("-m", *QUIET, f"hydra.sweep.dir={tmp_path / 'nothing'}", "hydra.sweeper.resume=true", env=env)
    assert nowhere.returncode == 2 and "holds no sweep to resume" in nowhere.stderr
    assert not (tmp_path / "nothing").exists()
    assert len(cli.runs()) == 3  # the sweep's run and its two trials', nothing new
    assert cli.client.get_run(parent.info.run_id).info.status == "FINISHED"  # untouched

    extended = cli("-m", *common, "optimizer.lr=1e-3,3e-3,1e-2", "hydra.sweeper.num_samples=2", env=env)
    assert extended.returncode == 0, extended.stderr
    assert "2 finished before, 0 to continue, 4 new" in extended.stderr
    parent, trials = sweep_runs(cli)
    assert sorted(trials) == [1, 2, 3, 4, 5, 6] and parent.info.status == "FINISHED"
    assert all(trials[n].info.end_time == before[n].info.end_time for n in (1, 2))  # not trained again
    rates = sorted(trials[n].data.params["optimizer/lr"] for n in range(3, 7))
    assert rates == ["0.001", "0.003", "0.01", "0.01"]
