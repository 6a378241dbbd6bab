"""Packed trials (hydra.sweeper.pack): which trials share a pack, and packs on Ray Tune end
to end, each member its own MLflow run, equal to its configuration trained alone."""

import numpy as np
import pytest

from experiments.sweep import space as search_space
from experiments.sweep.space import SearchSpaceError
from tests.experiments.test_sweep import sweep, sweep_runs
from tests.training.test_population import ATOL, RTOL
from zkynet import checkpoint


def packs_of(overrides, size, search="grid", num_samples=1):
    space = search_space.parse(overrides)
    variants = space.variants(search, num_samples, seed=0)
    return [[variants[i] for i in pack] for pack in search_space.packs(variants, size)], variants


def test_only_shape_free_values_share_a_pack_and_a_pack_holds_at_most_k():
    packs, variants = packs_of(
        ["optimizer.lr=1e-3,3e-3", "seed=0,1,2", "model.widths=[64,8,10],[64,16,10]", "trainer.epochs=2"], size=4
    )
    assert len(variants) == 12
    assert [len(p) for p in packs] == [4, 2, 4, 2]  # one group per width, chunked by 4
    for pack in packs:
        assert len({repr(v["model.widths"]) for v in pack}) == 1
    assert sorted((v["optimizer.lr"], v["seed"]) for p in packs[:2] for v in p) == sorted(
        (lr, seed) for lr in (1e-3, 3e-3) for seed in (0, 1, 2)
    )


def test_a_zero_dropout_or_momentum_is_other_code_and_intervals_pack():
    packs, _ = packs_of(["model.dropout=0,0.1,0.2", "seed=0,1"], size=8)
    assert sorted(len(p) for p in packs) == [2, 4]  # no dropout layers at 0: its own pack
    packs, _ = packs_of(["optimizer=sgd", "optimizer.momentum=0,0.9", "optimizer.lr=0.1,0.2"], size=8)
    assert sorted(len(p) for p in packs) == [2, 2]
    packs, variants = packs_of(
        [
            "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
            "optimizer.weight_decay=0,0.1",
            "+optimizer.b1=interval(0.8, 0.95)",
        ],
        size=8,
        num_samples=3,
    )
    assert [len(p) for p in packs] == [6] and len({v["optimizer.lr"] for v in variants}) == 6
    assert all(1e-4 <= v["optimizer.lr"] <= 1e-2 and 0.8 <= v["+optimizer.b1"] <= 0.95 for v in variants)
    assert (
        variants
        == packs_of(
            [
                "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
                "optimizer.weight_decay=0,0.1",
                "+optimizer.b1=interval(0.8, 0.95)",
            ],
            size=8,
            num_samples=3,
        )[1]
    )  # seeded


def test_random_search_draws_choices_too_and_bayesian_search_cannot_pack():
    _, variants = packs_of(["optimizer.lr=1e-3,3e-3,1e-2", "seed=range(0,100)"], size=8, search="random", num_samples=5)
    assert len(variants) == 5 and all(v["seed"] in range(100) for v in variants)
    with pytest.raises(SearchSpaceError, match="must be grid or random, not 'optuna'"):
        search_space.parse(["seed=0,1"]).variants("optuna", 1, 0)


def test_auto_spreads_the_trials_over_the_slots():
    assert search_space.auto_pack_size(8, 2) == 4
    assert search_space.auto_pack_size(9, 2) == 5
    assert search_space.auto_pack_size(3, 16) == 1


def metric_history(client, run, key):
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


@pytest.mark.slow
def test_a_pack_trains_each_member_as_alone_and_a_member_that_turns_nan_fails_alone(cli, runner, on_cluster):
    """One pack of four: two learning rates that train and two (1e30) whose loss turns NaN.
    Each member is its own child run; the NaN ones fail alone; the others' metrics and final
    parameters equal the same configurations trained alone."""
    common = ["trainer.epochs=3", "model.dropout=0.2", "model.widths=[64,32,10]", "trainer.checkpoint_min_seconds=0"]
    cluster, env = on_cluster
    result = sweep(cli, "hydra.sweeper.pack=4", "seed=0,1", "optimizer.lr=3e-3,1e30", *common, *cluster, env=env)
    assert result.returncode == 1, result.stderr  # members failed: the sweep fails
    assert "4 trials in 1 pack(s) of up to 4" in result.stderr and "[pack 1] epoch 2/3: best val_loss" in result.stderr
    _parent, members = sweep_runs(cli)
    assert sorted(members) == [1, 2, 3, 4]
    good = {number: run for number, run in members.items() if run.data.params["optimizer/lr"] == "0.003"}
    bad = [run for run in members.values() if run.data.params["optimizer/lr"] != "0.003"]
    assert len(good) == 2 and all(r.info.status == "FINISHED" for r in good.values())
    assert all(r.info.status == "FAILED" and "the loss became" in r.data.tags["error"] for r in bad)
    for run in good.values():
        seed = run.data.params["seed"]
        assert "checkpoints/last.npz" in cli.artifacts(run.info.run_id)
        alone = runner(f"seed={seed}", "optimizer.lr=3e-3", *common)
        assert np.isfinite(alone.objective)  # run() returns a RunResult
        (solo,) = [r for r in runner.runs() if r.data.params.get("seed") == seed and "sweep_job" not in r.data.tags]
        for key in ("train_loss", "val_loss", "val_accuracy", "batch_loss", "batch_accuracy"):  # batch_: per step
            packed_values = metric_history(cli.client, run, key)
            assert len(packed_values) >= 3, key
            np.testing.assert_allclose(
                packed_values, metric_history(runner.client, solo, key), rtol=RTOL, atol=ATOL, err_msg=key
            )
        packed = cli.client.download_artifacts(run.info.run_id, "checkpoints/last.npz", str(runner.folder))
        single = runner.client.download_artifacts(solo.info.run_id, "checkpoints/last.npz", str(runner.folder / "solo"))
        packed, single = checkpoint.load(packed), checkpoint.load(single)
        for name, value in single["params"].items():
            np.testing.assert_allclose(packed["params"][name], value, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.slow
def test_asha_stops_a_member_early_inside_its_pack(cli, on_cluster):
    """A pack of two: at the first rung (epoch 1, reduction factor 2) the bad learning rate
    is below the cutoff: its run ends FINISHED, tagged stopped early; the good one trains on."""
    cluster, env = on_cluster
    result = sweep(
        cli,
        "hydra.sweeper.pack=2",
        "hydra.sweeper.scheduler=asha",
        "hydra.sweeper.asha.reduction_factor=2",
        "trainer.epochs=4",
        "optimizer.lr=3e-3,1e-6",
        *cluster,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    parent, members = sweep_runs(cli)
    good, bad = members[1], members[2]
    assert parent.info.status == "FINISHED" and good.info.status == bad.info.status == "FINISHED"
    assert good.data.metrics["epoch"] == 4 and "stopped_early" not in good.data.tags
    assert bad.data.tags["stopped_early"] == "true" and bad.data.tags["stopped_at_epoch"] == "1"
    assert bad.data.metrics["epoch"] == 1 and len(cli.client.get_metric_history(bad.info.run_id, "val_loss")) == 1
    assert bad.info.end_time < good.info.end_time  # it ended when it stopped, not with the pack


@pytest.mark.slow
def test_population_based_training_inside_a_pack(cli, on_cluster):
    """pack=4 with scheduler=pbt: after epoch 2 the hopeless member (lr 1e-6) takes on the best
    member's weights and optimizer state inside the pack's program (the library test checks
    they are equal: tests/training/test_population.py) and a learning rate next to the best's;
    each member is still its own run, FINISHED, with its learning rate per epoch."""
    cluster, env = on_cluster
    result = sweep(
        cli,
        "hydra.sweeper.pack=4",
        "hydra.sweeper.scheduler=pbt",
        "hydra.sweeper.pbt.interval=2",
        "trainer.epochs=4",
        "trainer.lr_schedule=constant",
        "optimizer.lr=1e-6,3e-5,1e-3,3e-3",
        *cluster,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    parent, members = sweep_runs(cli)
    assert parent.info.status == "FINISHED" and sorted(members) == [1, 2, 3, 4]
    assert all(r.info.status == "FINISHED" for r in members.values())
    for run in members.values():
        rates = cli.client.get_metric_history(run.info.run_id, "hp/optimizer.lr")
        assert [m.step for m in sorted(rates, key=lambda m: m.step)] == [22, 44, 66, 88]
    hopeless = members[1]
    (exploited,) = cli.client.get_metric_history(hopeless.info.run_id, "pbt/exploited")
    assert exploited.step == 44 and int(exploited.value) in (3, 4)
    rates = metric_history(cli.client, hopeless, "hp/optimizer.lr")
    assert rates[:2] == pytest.approx([1e-6, 1e-6]) and rates[2] == rates[3]
    assert rates[2] == pytest.approx(1e-3, rel=1e-6) or rates[2] == pytest.approx(3e-3, rel=1e-6)
    losses = metric_history(cli.client, hopeless, "val_loss")
    assert losses[2] < 0.5 * losses[1]
