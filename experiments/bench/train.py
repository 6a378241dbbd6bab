"""Training-step speed: zkynet compiled vs the same model in plain JAX (vs PyTorch).

One step = forward, backward, Adam update. For each model:
  zkynet  TrainStep: our graph and our backward rules, traced once under jax.jit;
  jax     the same model written directly in JAX, jax.jit(jax.value_and_grad)
          plus the same Adam update, starting from the same weights: the reference;
  torch   the same architecture in PyTorch eager, when torch is importable.
Step times are the best of several interleaved rounds; compile time is the first
call (trace + compile + one step). Targets: zkynet/jax step <= 1.05,
compile <= 2x. `lstm-unrolled` is the LSTM with its loop unrolled in the graph
instead of scanned: compare its compile time with `lstm`'s.
"""
import math
import os
import platform
import time
from dataclasses import dataclass
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench import write_result
from experiments.bench.timing import best_seconds_per_call
from zkynet import losses, optim
from zkynet.framework.compile import TrainStep
from zkynet.models.autoencoder import DenseAutoencoder
from zkynet.models.cnn import LeNet
from zkynet.models.fcn import MLP
from zkynet.models.rnn import RecurrentLM
from zkynet.models.transformer import TransformerLM, sinusoidal_positions

STEP_TARGET, COMPILE_TARGET = 1.05, 2.0
LR = 1e-3


# ----------------------------------------------------------------------------- the references in plain JAX

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


def cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], axis=-1))


def mean_squared_error(prediction, target):
    return jnp.mean((prediction - target) ** 2)


def _layers(params, prefix):
    """["layers.0", "layers.1", ...]: the numbered modules under `prefix`, in order."""
    indices = {int(n[len(prefix):].split("/")[0]) for n in params if n.startswith(prefix)}
    return [f"{prefix}{i}" for i in sorted(indices)]


def jax_mlp(params, x, prefix=""):
    layers = _layers(params, prefix + "layers.")
    for i, layer in enumerate(layers):
        x = x @ params[f"{layer}/W"] + params[f"{layer}/b"]
        if i < len(layers) - 1:
            x = jax.nn.relu(x)
    return x


def jax_cnn(params, x):
    for layer in _layers({n: p for n, p in params.items() if p.ndim == 4}, "layers."):
        x = jax.lax.conv_general_dilated(x, params[f"{layer}/W"], (1, 1), "SAME",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW")) + params[f"{layer}/b"]
        x = jax.lax.reduce_window(jax.nn.relu(x), -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    dense = {n: p for n, p in params.items() if p.ndim in (1, 2)}
    return jax_mlp(dense, x.reshape(x.shape[0], -1))


def jax_autoencoder(params, x):
    return jax.nn.sigmoid(jax_mlp(params, jax_mlp(params, x, "encoder/"), "decoder/"))


def jax_lstm_lm(params, tokens):
    x = params["embed/E"][tokens] @ params["rnn/project/W"] + params["rnn/project/b"]
    U = params["rnn/cell/U"]
    hidden = U.shape[0]

    def step(state, x_t):
        h, c = state
        i, f, g, o = jnp.split(x_t + h @ U, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((tokens.shape[0], hidden))
    _, hs = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(hs, 0, 1) @ params["head/W"] + params["head/b"]


def _layer_norm(x, scale, shift, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * scale + shift


def jax_transformer_lm(params, tokens, heads):
    batch, steps = tokens.shape
    p = lambda name: params[name]  # noqa: E731
    dim = p("embed/E").shape[1]
    x = p("embed/E")[tokens] + sinusoidal_positions(steps, dim)
    causal = jnp.tril(jnp.ones((steps, steps), bool))
    for block in _layers(params, "blocks."):
        h = _layer_norm(x, p(f"{block}/norm1/scale"), p(f"{block}/norm1/shift"))
        qkv = (h @ p(f"{block}/attention/qkv/W") + p(f"{block}/attention/qkv/b"))
        qkv = qkv.reshape(batch, steps, 3, heads, dim // heads)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, heads, T, d_head)
        scores = jnp.where(causal, q @ jnp.swapaxes(k, -1, -2) / math.sqrt(dim // heads), -1e9)
        attended = jnp.swapaxes(jax.nn.softmax(scores) @ v, 1, 2).reshape(batch, steps, dim)
        x = x + attended @ p(f"{block}/attention/out/W") + p(f"{block}/attention/out/b")
        h = _layer_norm(x, p(f"{block}/norm2/scale"), p(f"{block}/norm2/shift"))
        h = jax.nn.gelu(h @ p(f"{block}/mlp/up/W") + p(f"{block}/mlp/up/b"), approximate=False)
        x = x + h @ p(f"{block}/mlp/down/W") + p(f"{block}/mlp/down/b")
    x = _layer_norm(x, p("norm/scale"), p("norm/shift"))
    return x @ p("head/W") + p("head/b")


def jax_train_step(apply, loss):
    init, update = adam_reference()

    def objective(params, x, y):
        return loss(apply(params, x), y)

    def step(params, state, x, y):
        value, grads = jax.value_and_grad(objective)(params, x, y)
        params, state = update(grads, state, params)
        return params, state, value
    return init, jax.jit(step, donate_argnums=(0, 1))


# ----------------------------------------------------------------------------- PyTorch, when present

def torch_step(kind, batch):
    """The same architecture in PyTorch eager (its own initialization), or None."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    nn, functional = torch.nn, torch.nn.functional
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        x, y, loss = torch.randn(batch, 64), torch.randint(0, 10, (batch,)), functional.cross_entropy
    elif kind == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
        x, y, loss = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,)), functional.cross_entropy
    elif kind == "autoencoder":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 32), nn.Linear(32, 256), nn.ReLU(),
                              nn.Linear(256, 784), nn.Sigmoid())
        x = torch.rand(batch, 784)
        y, loss = x, functional.mse_loss
    elif kind == "lstm":
        class LSTMLM(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed, self.lstm, self.head = nn.Embedding(64, 64), nn.LSTM(64, 128, batch_first=True), \
                    nn.Linear(128, 64)

            def forward(self, tokens):
                return self.head(self.lstm(self.embed(tokens))[0])
        model = LSTMLM()
        x, y = torch.randint(0, 64, (batch, 32)), torch.randint(0, 64, (batch, 32))
        loss = lambda out, y: functional.cross_entropy(out.reshape(-1, 64), y.reshape(-1))  # noqa: E731
    elif kind == "transformer":
        class LM(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(64, 128)
                self.register_buffer("positions", torch.tensor(np.asarray(sinusoidal_positions(64, 128))))
                layer = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, activation="gelu", batch_first=True,
                                                   norm_first=True)
                self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
                self.norm, self.head = nn.LayerNorm(128), nn.Linear(128, 64)
                self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(64))

            def forward(self, tokens):
                x = self.blocks(self.embed(tokens) + self.positions, mask=self.mask, is_causal=True)
                return self.head(self.norm(x))
        model = LM()
        x, y = torch.randint(0, 64, (batch, 64)), torch.randint(0, 64, (batch, 64))
        loss = lambda out, y: functional.cross_entropy(out.reshape(-1, 64), y.reshape(-1))  # noqa: E731
    else:
        return None
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def step():
        optimizer.zero_grad()
        value = loss(model(x), y)
        value.backward()
        optimizer.step()
        return value.item()
    return step


# ----------------------------------------------------------------------------- the cases

@dataclass
class Case:
    build: Callable  # () -> zkynet model
    apply: Callable  # (params, x) -> outputs, in plain JAX
    data: Callable  # (rng, batch) -> (x, y)
    batch: int
    loss: str = "cross_entropy"  # or "mse"
    torch: Optional[str] = None


def _images(rng, batch):
    return rng.normal(size=(batch, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, batch).astype(np.int32)


def _tokens(steps):
    return lambda rng, batch: tuple(rng.integers(0, 64, (batch, steps)).astype(np.int32) for _ in range(2))


def _pixels(rng, batch):
    x = rng.uniform(size=(batch, 784)).astype(np.float32)
    return x, x


CASES = {
    "mlp": Case(lambda: MLP([64, 256, 256, 10], key=0), jax_mlp,
                lambda rng, b: (rng.normal(size=(b, 64)).astype(np.float32), rng.integers(0, 10, b).astype(np.int32)),
                256, torch="mlp"),
    "cnn": Case(lambda: LeNet((1, 28, 28), channels=(16, 32), hidden=(128,), key=0), jax_cnn, _images, 128,
                torch="cnn"),
    "autoencoder": Case(lambda: DenseAutoencoder(784, bottleneck=32, hidden=(256,), key=0), jax_autoencoder,
                        _pixels, 128, loss="mse", torch="autoencoder"),
    "lstm": Case(lambda: RecurrentLM(64, embed=64, hidden=128, key=0), jax_lstm_lm, _tokens(32), 32, torch="lstm"),
    "lstm-unrolled": Case(lambda: RecurrentLM(64, embed=64, hidden=128, unroll=True, key=0), jax_lstm_lm,
                          _tokens(32), 32),
    "transformer": Case(lambda: TransformerLM(64, dim=128, heads=4, layers=2, mlp=512, max_length=64, key=0),
                        lambda p, x: jax_transformer_lm(p, x, heads=4), _tokens(64), 32, torch="transformer"),
}
LOSSES = {"cross_entropy": (losses.softmax_cross_entropy, cross_entropy), "mse": (losses.mse, mean_squared_error)}


# ----------------------------------------------------------------------------- timing

def measure(name, case, scale, steps, rounds):
    batch = case.batch * scale
    x, y = (jnp.asarray(a) for a in case.data(np.random.default_rng(0), batch))
    our_loss, reference_loss = LOSSES[case.loss]

    model = case.build()
    initial = {n: jnp.array(p.value) for n, p in model.named_parameters().items()}
    started = time.perf_counter()
    ours = TrainStep(model, our_loss, optim.Adam(LR))
    first_loss = float(ours(x, y)["loss"])
    ours_compile = time.perf_counter() - started

    started = time.perf_counter()
    init, reference = jax_train_step(case.apply, reference_loss)
    state = {"params": jax.tree_util.tree_map(jnp.array, initial)}
    state["opt"] = init(state["params"])
    state["params"], state["opt"], loss = reference(state["params"], state["opt"], x, y)
    jax.block_until_ready(loss)
    reference_compile = time.perf_counter() - started
    if not np.isclose(first_loss, float(loss), rtol=1e-4):  # same weights, same batch: same loss
        raise AssertionError(f"{name}: the JAX reference is not the same model (loss {float(loss)} vs "
                             f"zkynet's {first_loss})")

    def reference_run():
        state["params"], state["opt"], value = reference(state["params"], state["opt"], x, y)
        return value

    contenders = {"zkynet": lambda: ours(x, y)["loss"], "jax": reference_run,
                  "torch": torch_step(case.torch, batch) if case.torch and scale == 1 else None}
    contenders = {n: fn for n, fn in contenders.items() if fn is not None}
    if steps is None:  # rounds of about 50 ms each
        steps = max(3, int(0.05 / best_seconds_per_call(reference_run, 1, 3, warmup=0)))
    times = {n: float("inf") for n in contenders}
    for _ in range(rounds):  # interleaved, so a slow patch of the machine hits every contender
        for n, fn in contenders.items():
            times[n] = min(times[n], best_seconds_per_call(fn, 1, steps, warmup=0))
    return dict(model=name, batch=batch, zkynet_step_ms=times["zkynet"] * 1e3, jax_step_ms=times["jax"] * 1e3,
                torch_step_ms=times["torch"] * 1e3 if "torch" in times else None,
                step_ratio=times["zkynet"] / times["jax"], zkynet_compile_s=ours_compile,
                jax_compile_s=reference_compile, compile_ratio=ours_compile / reference_compile)


def add_arguments(parser):
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--batch-scale", type=int, default=1,
                        help="multiply every batch size (GPUs: 8-32; PyTorch is left out then)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timing round (default: ~50 ms)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", default="outputs/bench/train.json")


def run(args):
    device = jax.devices()[0]
    print(f"train step: zkynet compiled vs plain JAX vs PyTorch eager (jax {jax.__version__}, "
          f"{device.platform}: {device.device_kind}, {os.cpu_count()} cpus)")
    print(f"targets: step ratio <= {STEP_TARGET}, compile ratio <= {COMPILE_TARGET}")
    print(f"{'model':<14}{'batch':>6}{'zkynet':>10}{'jax':>10}{'torch':>10}{'zk/jax':>8}"
          f"{'compile zk':>12}{'jax':>8}{'ratio':>7}")
    rows = []
    for name in args.models:
        row = measure(name, CASES[name], args.batch_scale, args.steps, args.rounds)
        rows.append(row)
        torch_ms = f"{row['torch_step_ms']:.2f}ms" if row["torch_step_ms"] is not None else "n/a"
        print(f"{name:<14}{row['batch']:>6}{row['zkynet_step_ms']:>8.2f}ms{row['jax_step_ms']:>8.2f}ms"
              f"{torch_ms:>10}{row['step_ratio']:>8.2f}{row['zkynet_compile_s']:>11.2f}s"
              f"{row['jax_compile_s']:>7.2f}s{row['compile_ratio']:>7.2f}", flush=True)
    write_result(args.json, dict(benchmark="train", jax=jax.__version__, device=str(device), machine=platform.machine(),
                                 cpus=os.cpu_count(), rows=rows))
