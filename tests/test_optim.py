"""Optimizers against the update rules written out in NumPy, schedules, clipping,
and exact save/restore of optimizer state."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet import checkpoint, optim

STEPS = 5


def gradient_sequence(seed=0):
    rng = np.random.default_rng(seed)
    return [{"w": rng.normal(size=(3, 2)), "b": rng.normal(size=(2,))} for _ in range(STEPS)]


def run(optimizer, grads):
    with jax.enable_x64(True):
        params = {"w": jnp.ones((3, 2)), "b": jnp.full((2,), 0.5)}
        state = optimizer.init(params)
        for g in grads:
            params, state = optimizer.update(jax.tree_util.tree_map(jnp.asarray, g), state, params)
        return jax.tree_util.tree_map(np.asarray, params), state


def reference(update, grads, **slots):
    params = {"w": np.ones((3, 2)), "b": np.full((2,), 0.5)}
    state = {k: {n: np.zeros_like(p) for n, p in params.items()} for k in slots}
    for t, g in enumerate(grads, 1):
        for name in params:
            params[name] = update(params[name], g[name], t, {k: state[k] for k in state}, name)
    return params


def sgd_momentum(lr, mu, nesterov=False, wd=0.0):
    def update(p, g, t, state, name):
        g = g + wd * p
        v = state["v"][name] = mu * state["v"][name] + g
        return p - lr * (g + mu * v if nesterov else v)

    return update


def adam(lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    def update(p, g, t, state, name):
        if not decoupled:
            g = g + wd * p
        m = state["m"][name] = b1 * state["m"][name] + (1 - b1) * g
        v = state["v"][name] = b2 * state["v"][name] + (1 - b2) * g * g
        direction = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        return p - lr * (direction + (wd * p if decoupled else 0))

    return update


@pytest.mark.parametrize(
    "optimizer, update, slots",
    [
        (optim.SGD(0.1), sgd_momentum(0.1, 0.0), ["v"]),
        (optim.SGD(0.1, momentum=0.9), sgd_momentum(0.1, 0.9), ["v"]),
        (
            optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
            sgd_momentum(0.1, 0.9, nesterov=True, wd=0.01),
            ["v"],
        ),
        (optim.Adam(0.01), adam(0.01), ["m", "v"]),
        (optim.Adam(0.01, weight_decay=0.1), adam(0.01, wd=0.1), ["m", "v"]),
        (optim.AdamW(0.01, weight_decay=0.1), adam(0.01, wd=0.1, decoupled=True), ["m", "v"]),
    ],
)
def test_updates_match_the_written_out_rules(optimizer, update, slots):
    grads = gradient_sequence()
    got, state = run(optimizer, grads)
    want = reference(update, grads, **dict.fromkeys(slots))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12)
    assert int(state["step"]) == STEPS


def test_schedules():
    assert float(optim.Constant(0.1)(7)) == pytest.approx(0.1)
    step = optim.StepDecay(1.0, every=10, gamma=0.5)
    assert [float(step(s)) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    cosine = optim.Cosine(1.0, total_steps=100, final_lr=0.1)
    assert float(cosine(0)) == pytest.approx(1.0)
    assert float(cosine(50)) == pytest.approx(0.55)
    assert float(cosine(100)) == pytest.approx(0.1) and float(cosine(1000)) == pytest.approx(0.1)
    warm = optim.Warmup(optim.Cosine(1.0, total_steps=10), steps=4)
    assert [float(warm(s)) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert float(warm(4)) == pytest.approx(1.0) and float(warm(9)) == pytest.approx(0.5)


def test_schedule_drives_the_learning_rate_inside_jit():
    opt = optim.SGD(optim.StepDecay(1.0, every=1, gamma=0.5))
    params = {"w": jnp.zeros(())}
    state = opt.init(params)
    update = jax.jit(opt.update)
    for _ in range(3):
        params, state = update({"w": jnp.ones(())}, state, params)
    assert float(params["w"]) == pytest.approx(-(1 + 0.5 + 0.25))


def test_global_norm_clipping():
    grads = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}  # global norm 5
    clipped = optim.clip_by_global_norm(grads, 1.0)
    assert float(optim.global_norm(clipped)) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-5)
    untouched = optim.clip_by_global_norm(grads, 10.0)
    np.testing.assert_allclose(untouched["b"], [[4.0]])
    params, _ = optim.SGD(1.0, clip_norm=1.0).update(
        grads, {"step": jnp.zeros((), jnp.int32)}, {"a": jnp.zeros(2), "b": jnp.zeros((1, 1))}
    )
    assert float(optim.global_norm(params)) == pytest.approx(1.0, rel=1e-5)


def test_state_saves_and_restores_exactly(tmp_path):
    opt = optim.Adam(0.01)
    grads = gradient_sequence(1)
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    state = opt.init(params)
    for g in grads[:3]:
        params, state = opt.update(g, state, params)
    checkpoint.save(tmp_path / "opt.npz", {"params": params, "optimizer": state})
    restored = checkpoint.load(tmp_path / "opt.npz")
    resumed_params = jax.tree_util.tree_map(jnp.asarray, restored["params"])
    resumed_state = jax.tree_util.tree_map(jnp.asarray, restored["optimizer"])
    for g in grads[3:]:
        params, state = opt.update(g, state, params)
        resumed_params, resumed_state = opt.update(g, resumed_state, resumed_params)
    for name in params:
        np.testing.assert_array_equal(params[name], resumed_params[name])  # bit for bit
    assert int(resumed_state["step"]) == len(grads)


def test_bad_settings():
    with pytest.raises(ValueError, match="Nesterov momentum needs momentum"):
        optim.SGD(0.1, nesterov=True)


def test_cosine_matches_formula_midway():
    s = optim.Cosine(2.0, total_steps=8)
    assert float(s(2)) == pytest.approx(1 + math.cos(math.pi / 4))


def sgd(lr=0.1, momentum=0.9, weight_decay=0.0):
    return optim.SGD(optim.Warmup(optim.Cosine(lr, 10), 2), momentum=momentum, weight_decay=weight_decay)


@pytest.mark.parametrize(
    "make, values",
    [
        (sgd, dict(lr=0.3, momentum=0.5, weight_decay=0.01)),
        (optim.Adam, dict(lr=0.03, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1)),
        (optim.AdamW, dict(lr=0.03, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1)),
    ],
)
def test_hyperparameters_given_to_update_act_as_the_constructor_s(make, values):
    """A population passes each member's numbers (traced) to one optimizer's update: that must
    equal the optimizer built with those numbers."""
    default, wanted = make(), make(**values)
    assert values.items() <= wanted.hyperparameters().items() and default.signature() == wanted.signature()
    grads = gradient_sequence()
    with jax.enable_x64(True):
        params = {"w": jnp.ones((3, 2)), "b": jnp.full((2,), 0.5)}
        given = jax.jit(default.update)
        traced_params, traced_state = params, default.init(params)
        for g in grads:
            traced_params, traced_state = given(
                g, traced_state, traced_params, {k: jnp.asarray(v) for k, v in wanted.hyperparameters().items()}
            )
        want, _ = run(wanted, grads)
        for name in want:
            np.testing.assert_allclose(traced_params[name], want[name], rtol=1e-12)


def test_a_plain_function_schedule_has_no_peak_and_signatures_tell_code_apart():
    assert "lr" not in optim.SGD(lambda step: 0.1).hyperparameters()
    assert optim.Adam(0.1).signature() != optim.AdamW(0.1).signature()
    assert optim.Adam(optim.Cosine(0.1, 100)).signature() != optim.Adam(optim.Cosine(0.1, 200)).signature()
    assert optim.Adam(0.1, clip_norm=1.0).signature() != optim.Adam(0.1).signature()
    assert optim.SGD(0.1, momentum=0.9).signature() != optim.SGD(0.1).signature()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: optim.StepDecay(0.1, every=0), "StepDecay every must be a positive integer"),
        (lambda: optim.StepDecay(0.1, every=2.5), "StepDecay every must be a positive integer"),
        (lambda: optim.StepDecay(0.1, every=10, gamma=0), r"StepDecay gamma must be a decay factor in \(0, 1\]"),
        (lambda: optim.StepDecay(0.1, every=10, gamma=10.0), r"StepDecay gamma must be a decay factor in \(0, 1\]"),
        (lambda: optim.Cosine(0.1, total_steps=0), "Cosine total_steps must be a positive integer"),
        (lambda: optim.Cosine(0.1, total_steps=10, final_lr=0.5), r"Cosine final_lr must be a number in \[0, lr\]"),
        (lambda: optim.Cosine(0.1, total_steps=10, final_lr=-0.1), r"Cosine final_lr must be a number in \[0, lr\]"),
        (lambda: optim.Warmup(0.1, -1), "Warmup steps must be a positive integer"),
        (lambda: optim.Warmup(optim.Cosine(0.1, 100), 0), "Warmup steps must be a positive integer"),
        (lambda: optim.Constant(0.0), "lr must be a positive number"),
        (lambda: optim.StepDecay(float("nan"), every=10), "lr must be a positive number"),
    ],
)
def test_schedules_refuse_settings_that_would_train_on_a_wrong_rate(make, message):
    """StepDecay(every=0) gave lr 1.0 then 10.0; Cosine(total_steps=0) turned weights NaN under
    jit; Warmup(s, -1) was accepted."""
    with pytest.raises(ValueError, match=message):
        make()


def test_valid_schedules_still_build_with_traced_peaks():
    cosine = optim.Cosine(0.1, total_steps=100, final_lr=0.01)
    assert float(cosine(100)) == pytest.approx(0.01)
    assert float(jax.jit(lambda lr: cosine.at(0, lr))(jnp.asarray(0.5))) == pytest.approx(0.5)
