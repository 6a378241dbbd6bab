"""Training-step speed: zkynet compiled vs the same model in plain JAX (vs PyTorch).

One step = forward, backward, Adam update. For each model:
  zkynet  TrainStep: our graph and our backward rules, traced once under jax.jit;
  jax     the same model written directly in JAX, jax.jit(jax.value_and_grad)
          plus the same Adam update, starting from the same weights: the reference;
  torch   the same architecture in PyTorch eager, when torch is importable.
Step times are the best of several interleaved rounds; compile time is the first
call (trace + compile + one step). Targets: zkynet/jax step <= 1.05,
compile <= 2x.
"""
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from zkynet import losses, optim
from zkynet.framework.compile import TrainStep
from zkynet.models.cnn import LeNet
from zkynet.models.fcn import MLP

STEP_TARGET, COMPILE_TARGET = 1.05, 2.0
LR = 1e-3


# ----------------------------------------------------------------------------- the reference in plain JAX

def adam_reference(lr=LR, b1=0.9, b2=0.999, eps=1e-8):
    def init(params):
        return {"t": jnp.zeros((), jnp.int32), "m": jax.tree_util.tree_map(jnp.zeros_like, params),
                "v": jax.tree_util.tree_map(jnp.zeros_like, params)}

    def update(grads, state, params):
        t = state["t"] + 1
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], grads)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state["v"], grads)
        mc, vc = 1 - b1 ** t.astype(jnp.float32), 1 - b2 ** t.astype(jnp.float32)
        params = jax.tree_util.tree_map(lambda p, m, v: p - lr * (m / mc) / (jnp.sqrt(v / vc) + eps),
                                        params, m, v)
        return params, {"t": t, "m": m, "v": v}
    return init, update


def jax_mlp(params, x):
    layers = sorted({name.split("/")[0] for name in params}, key=lambda s: int(s.split(".")[1]))
    for i, layer in enumerate(layers):
        x = x @ params[f"{layer}/W"] + params[f"{layer}/b"]
        if i < len(layers) - 1:
            x = jax.nn.relu(x)
    return x


def jax_cnn(params, x):
    convs = sorted({n.split("/")[0] for n in params if params[n].ndim == 4}, key=lambda s: int(s.split(".")[1]))
    denses = sorted({n.split("/")[0] for n in params if params[n].ndim == 2}, key=lambda s: int(s.split(".")[1]))
    for layer in convs:
        x = jax.lax.conv_general_dilated(x, params[f"{layer}/W"], (1, 1), "SAME",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW")) + params[f"{layer}/b"]
        x = jax.nn.relu(x)
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    x = x.reshape(x.shape[0], -1)
    return jax_mlp({n: params[n] for n in params if n.split("/")[0] in denses}, x)


def jax_train_step(apply):
    init, update = adam_reference()

    def loss(params, x, y):
        logits = apply(params, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    def step(params, state, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        params, state = update(grads, state, params)
        return params, state, value
    return init, jax.jit(step, donate_argnums=(0, 1))


# ----------------------------------------------------------------------------- PyTorch, when present

def torch_step(kind, widths_or_shape, batch, classes):
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    nn = torch.nn
    if kind == "mlp":
        widths = widths_or_shape
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
        model = nn.Sequential(*layers)
        x = torch.randn(batch, widths[0])
    else:
        c, h, w = widths_or_shape
        model = nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(32 * (h // 4) * (w // 4), 128), nn.ReLU(), nn.Linear(128, classes))
        x = torch.randn(batch, c, h, w)
    y = torch.randint(0, classes, (batch,))
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    return step


# ----------------------------------------------------------------------------- timing

def best_step_seconds(run, steps, rounds):
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            out = run()
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def measure(name, model_fn, apply, torch_fn, input_shape, batch, classes, steps, rounds):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch,) + input_shape), jnp.float32)
    y = jnp.asarray(rng.integers(0, classes, size=batch), jnp.int32)

    model = model_fn()
    initial = {n: jnp.array(p.value) for n, p in model.named_parameters().items()}
    started = time.perf_counter()
    ours = TrainStep(model, losses.softmax_cross_entropy, optim.Adam(LR))
    jax.block_until_ready(ours(x, y))
    ours_compile = time.perf_counter() - started

    started = time.perf_counter()
    init, reference = jax_train_step(apply)
    state = {"params": jax.tree_util.tree_map(jnp.array, initial)}
    state["opt"] = init(state["params"])
    state["params"], state["opt"], loss = reference(state["params"], state["opt"], x, y)
    jax.block_until_ready(loss)
    reference_compile = time.perf_counter() - started

    def reference_run():
        state["params"], state["opt"], value = reference(state["params"], state["opt"], x, y)
        return value

    torch_run = torch_fn()
    contenders = {"zkynet": lambda: ours(x, y)["loss"], "jax": reference_run, "torch": torch_run}
    contenders = {name: fn for name, fn in contenders.items() if fn is not None}
    if steps is None:  # rounds of about 50 ms each
        steps = max(3, int(0.05 / best_step_seconds(reference_run, 3, 1)))
    times = {name: float("inf") for name in contenders}
    for _ in range(rounds):  # interleaved, so a slow patch of the machine hits every contender
        for name, fn in contenders.items():
            times[name] = min(times[name], best_step_seconds(fn, steps, 1))
    return dict(model=name, batch=batch, input_shape=list(input_shape),
                zkynet_step_ms=times["zkynet"] * 1e3, jax_step_ms=times["jax"] * 1e3,
                torch_step_ms=times["torch"] * 1e3 if "torch" in times else None,
                step_ratio=times["zkynet"] / times["jax"],
                zkynet_compile_s=ours_compile, jax_compile_s=reference_compile,
                compile_ratio=ours_compile / reference_compile)


def cases(scale):
    return {
        "mlp": dict(model_fn=lambda: MLP([64, 256, 256, 10], key=0), apply=jax_mlp,
                    torch_fn=lambda: torch_step("mlp", [64, 256, 256, 10], 256 * scale, 10),
                    input_shape=(64,), batch=256 * scale, classes=10),
        "cnn": dict(model_fn=lambda: LeNet((1, 28, 28), channels=(16, 32), hidden=(128,), key=0), apply=jax_cnn,
                    torch_fn=lambda: torch_step("cnn", (1, 28, 28), 128 * scale, 10),
                    input_shape=(1, 28, 28), batch=128 * scale, classes=10),
    }


def add_arguments(parser):
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--batch-scale", type=int, default=1, help="multiply every batch size (GPUs: 8-32)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timing round (default: ~50 ms)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", default="outputs/bench/train.json")


def run(args):
    device = jax.devices()[0]
    print(f"train step: zkynet compiled vs plain JAX vs PyTorch eager (jax {jax.__version__}, "
          f"{device.platform}: {device.device_kind}, {os.cpu_count()} cpus)")
    print(f"targets: step ratio <= {STEP_TARGET}, compile ratio <= {COMPILE_TARGET}")
    header = (f"{'model':<6}{'batch':>6}{'zkynet':>10}{'jax':>10}{'torch':>10}{'zk/jax':>8}"
              f"{'compile zk':>12}{'jax':>8}{'ratio':>7}")
    print(header)
    rows = []
    available = cases(args.batch_scale)
    for name in args.models:
        row = measure(name, steps=args.steps, rounds=args.rounds, **available[name])
        rows.append(row)
        torch_ms = f"{row['torch_step_ms']:.2f}ms" if row["torch_step_ms"] is not None else "n/a"
        print(f"{name:<6}{row['batch']:>6}{row['zkynet_step_ms']:>8.2f}ms{row['jax_step_ms']:>8.2f}ms"
              f"{torch_ms:>10}{row['step_ratio']:>8.2f}{row['zkynet_compile_s']:>11.2f}s"
              f"{row['jax_compile_s']:>7.2f}s{row['compile_ratio']:>7.2f}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(dict(benchmark="train", jax=jax.__version__, device=str(device), machine=platform.machine(),
                       cpus=os.cpu_count(), rows=rows), f, indent=1)
    print(f"wrote {args.json}")
