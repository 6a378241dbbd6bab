"""Training-step speed: zkynet compiled vs the same model in plain JAX (vs PyTorch).

One step = forward, backward, Adam update. For each model:
  zkynet  TrainStep: our graph and our backward rules, traced once under jax.jit;
  jax     the same model written directly in JAX, jax.jit(jax.value_and_grad)
          plus the same Adam update, starting from the same weights: the reference;
  torch   the same architecture in PyTorch eager (torch_reference.py), in a process
          of its own run by an interpreter with torch (--torch-python).
Step times are medians of interleaved rounds; compile time is the first call
(trace + compile + one step). `--gpu` switches to sizes that fill a GPU and the
report adds throughput and achieved FLOP/s against the device's peak (FLOPs by XLA's
count, which takes a loop body once: a scanned LSTM's figure is a lower bound).
Targets: zkynet/jax step <= 1.05, compile <= 2x. `lstm-unrolled` is the LSTM with
its loop unrolled in the graph instead of scanned: compare its compile time with `lstm`'s.
`--precision bf16` times mixed precision (TrainStep(precision="bf16"); the JAX reference
casts its weights and inputs to bfloat16 and its logits back to float32 the same way)
against the device's bfloat16 matmul peak.
"""

import dataclasses
import importlib.util
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench import write_result
from experiments.bench.timing import best_seconds_per_call
from zkynet import losses, optim
from zkynet.framework.compile import TrainStep, compute_dtype
from zkynet.models.autoencoder import DenseAutoencoder
from zkynet.models.cnn import LeNet
from zkynet.models.fcn import MLP
from zkynet.models.rnn import RecurrentLM
from zkynet.models.transformer import TransformerLM, sinusoidal_positions

STEP_TARGET, COMPILE_TARGET = 1.05, 2.0
# untimed steps at the start of every round, every contender: the first steps after another
# process's round ran up to 1.7x slower (caches refilled), which weighed on ~1 ms steps
ROUND_WARMUP = 2
# with PyTorch in the run, a short pause after every contender's round: PyTorch's idle OpenMP
# threads spin up to ~10 ms after its round (measured), and on this machine a round that
# follows a pause runs slower than one that follows work (the digits MLP's steps: 0.82-0.95
# vs 0.61-0.72 ms), so every round follows the same pause (with 0.5 s after PyTorch's rounds
# only, zkynet's came after one twice as often as JAX's: the autoencoder read 1.33x JAX with
# PyTorch in the run, 0.95x without)
SETTLE_S = 0.02
LR = 1e-3


# ----------------------------------------------------------------------------- the references in plain JAX


def adam_reference(lr=LR, b1=0.9, b2=0.999, eps=1e-8):
    def init(params):
        return {
            "t": jnp.zeros((), jnp.int32),
            "m": jax.tree_util.tree_map(jnp.zeros_like, params),
            "v": jax.tree_util.tree_map(jnp.zeros_like, params),
        }

    def update(grads, state, params):
        t = state["t"] + 1
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], grads)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state["v"], grads)
        mc, vc = 1 - b1 ** t.astype(jnp.float32), 1 - b2 ** t.astype(jnp.float32)
        params = jax.tree_util.tree_map(lambda p, m, v: p - lr * (m / mc) / (jnp.sqrt(v / vc) + eps), params, m, v)
        return params, {"t": t, "m": m, "v": v}

    return init, update


def cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], axis=-1))


def mean_squared_error(prediction, target):
    return jnp.mean((prediction - target) ** 2)


def _layers(params, prefix):
    """["layers.0", "layers.1", ...]: the numbered modules under `prefix`, in order."""
    indices = {int(n[len(prefix) :].split("/")[0]) for n in params if n.startswith(prefix)}
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
        x = (
            jax.lax.conv_general_dilated(
                x, params[f"{layer}/W"], (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")
            )
            + params[f"{layer}/b"]
        )
        x = jax.lax.reduce_window(
            jax.nn.relu(x), np.array(-np.inf, x.dtype), jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"
        )
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

    zeros = jnp.zeros((tokens.shape[0], hidden), x.dtype)
    _, hs = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(hs, 0, 1) @ params["head/W"] + params["head/b"]


def _layer_norm(x, scale, shift, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * scale + shift


def jax_transformer_lm(params, tokens, heads):
    batch, steps = tokens.shape
    p = lambda name: params[name]  # noqa: E731
    dim = p("embed/E").shape[1]
    x = p("embed/E")[tokens]
    x = x + sinusoidal_positions(steps, dim).astype(x.dtype)
    causal = jnp.tril(jnp.ones((steps, steps), bool))
    for block in _layers(params, "blocks."):
        h = _layer_norm(x, p(f"{block}/norm1/scale"), p(f"{block}/norm1/shift"))
        qkv = h @ p(f"{block}/attention/qkv/W") + p(f"{block}/attention/qkv/b")
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


def jax_train_step(apply, loss, compute_dtype=None):
    """With `compute_dtype` (bfloat16), mixed precision as TrainStep does it: floating
    weights and inputs cast to it, the output cast back to float32 for the loss."""
    init, update = adam_reference()

    def cast(a):
        return a.astype(compute_dtype) if compute_dtype is not None and jnp.issubdtype(a.dtype, jnp.floating) else a

    def objective(params, x, y):
        return loss(apply(jax.tree_util.tree_map(cast, params), cast(x)).astype(jnp.float32), y)

    def step(params, state, x, y):
        value, grads = jax.value_and_grad(objective)(params, x, y)
        params, state = update(grads, state, params)
        return params, state, value

    return init, jax.jit(step, donate_argnums=(0, 1))


# ----------------------------------------------------------------------------- PyTorch, in its own process


class TorchProcess:
    """The case's PyTorch model (torch_reference.py) in a process of its own, run by
    `python` (an interpreter with torch); calling it times one round of `steps` steps."""

    def __init__(self, python, kind, batch):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")
        self.process = subprocess.Popen(
            [python, script, kind, str(batch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdin is not None and self.process.stdout is not None  # both piped above
        self.requests, self.answers = self.process.stdin, self.process.stdout
        if self.answers.readline().strip() != "ready":
            raise RuntimeError(f"{python} could not run the PyTorch reference for {kind} (does it have torch?)")

    def __call__(self, steps):
        self.requests.write(f"{steps} {ROUND_WARMUP}\n")
        self.requests.flush()
        return float(self.answers.readline())

    def close(self):
        self.requests.close()
        self.process.wait()


def default_torch_python():
    """This interpreter when it has torch, else None (then PyTorch is left out)."""
    return sys.executable if importlib.util.find_spec("torch") is not None else None


# ----------------------------------------------------------------------------- the cases


@dataclass
class Case:
    build: Callable  # () -> zkynet model
    apply: Callable  # (params, x) -> outputs, in plain JAX
    data: Callable  # (rng, batch) -> (x, y)
    batch: int
    loss: str = "cross_entropy"  # or "mse"
    torch: str | None = None
    tokens: int = 0  # a language model's sequence length: throughput in tokens/s (else samples/s)


def _images(rng, batch):
    return rng.normal(size=(batch, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, batch).astype(np.int32)


def _tokens(steps, vocabulary=64):
    return lambda rng, batch: tuple(rng.integers(0, vocabulary, (batch, steps)).astype(np.int32) for _ in range(2))


def _pixels(rng, batch):
    x = rng.uniform(size=(batch, 784)).astype(np.float32)
    return x, x


def _features(rng, batch):
    return rng.normal(size=(batch, 64)).astype(np.float32), rng.integers(0, 10, batch).astype(np.int32)


def _lstm(vocabulary, embed, hidden, steps, batch, **kwargs):
    return Case(
        lambda: RecurrentLM(vocabulary, embed=embed, hidden=hidden, key=0, **kwargs),
        jax_lstm_lm,
        _tokens(steps, vocabulary),
        batch,
        tokens=steps,
    )


def _transformer(vocabulary, dim, heads, layers, steps, batch):
    return Case(
        lambda: TransformerLM(vocabulary, dim=dim, heads=heads, layers=layers, mlp=4 * dim, max_length=steps, key=0),
        lambda p, x: jax_transformer_lm(p, x, heads=heads),
        _tokens(steps, vocabulary),
        batch,
        tokens=steps,
    )


CASES = {
    "mlp": Case(lambda: MLP([64, 256, 256, 10], key=0), jax_mlp, _features, 256, torch="mlp"),
    "cnn": Case(
        lambda: LeNet((1, 28, 28), channels=(16, 32), hidden=(128,), key=0), jax_cnn, _images, 128, torch="cnn"
    ),
    "autoencoder": Case(
        lambda: DenseAutoencoder(784, bottleneck=32, hidden=(256,), key=0),
        jax_autoencoder,
        _pixels,
        128,
        loss="mse",
        torch="autoencoder",
    ),
    "lstm": dataclasses.replace(_lstm(64, 64, 128, 32, 32), torch="lstm"),
    "lstm-unrolled": _lstm(64, 64, 128, 32, 32, unroll=True),
    "transformer": dataclasses.replace(_transformer(64, 128, 4, 2, 64, 32), torch="transformer"),
}
# --gpu: sizes that keep a data-center GPU's matmul units busy (the CPU sizes leave it idle)
GPU_CASES = {
    "mlp": dataclasses.replace(CASES["mlp"], batch=16384),
    "cnn": dataclasses.replace(CASES["cnn"], batch=4096),
    "autoencoder": dataclasses.replace(CASES["autoencoder"], batch=8192),
    "lstm": _lstm(1024, 512, 1024, 64, 256),
    "lstm-unrolled": _lstm(1024, 512, 1024, 64, 256, unroll=True),
    "transformer": _transformer(1024, 768, 12, 6, 512, 64),
}
LOSSES = {"cross_entropy": (losses.softmax_cross_entropy, cross_entropy), "mse": (losses.mse, mean_squared_error)}
# Dense matmul peaks, TFLOP/s, by --precision: float32 runs on TF32 tensor cores (JAX's default
# float32 matmul precision on these GPUs), bf16 at twice that (SXM parts' datasheets, without
# sparsity): the yardstick for achieved FLOP/s. Others: --peak-tflops.
PEAK_TFLOPS = {
    "float32": {"H100": 494.7, "H200": 494.7, "A100": 156.0, "L4": 60.0},
    "bf16": {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0},
}
# The first step's loss, zkynet's against the JAX reference's (same weights, same batch):
# float32 agrees to rounding; bfloat16 (8 bits of mantissa, relative rounding 2**-9 = 0.2% per
# operation) sums in another order in each, so to about a percent.
FIRST_LOSS_RTOL = {"float32": 1e-4, "bf16": 2e-2}


# ----------------------------------------------------------------------------- timing


def step_flops(train_step, *batch):
    """FLOPs of one zkynet step, by XLA's cost analysis of the lowered program (None if it
    has none): the arithmetic asked for, whatever the compiler does with it."""
    lowered = train_step._step.lower(train_step.param_values(), train_step.opt_state, batch, train_step.rng)
    analysis = lowered.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return analysis.get("flops") if analysis else None


def measure(name, case, scale, steps, rounds, torch_python, precision="float32"):
    batch = case.batch * scale
    x, y = (jnp.asarray(a) for a in case.data(np.random.default_rng(0), batch))
    our_loss, reference_loss = LOSSES[case.loss]

    model = case.build()
    initial = {n: jnp.array(p.value) for n, p in model.named_parameters().items()}
    started = time.perf_counter()
    ours = TrainStep(model, our_loss, optim.Adam(LR), precision=precision)
    first_loss = float(ours(x, y)["loss"])
    ours_compile = time.perf_counter() - started

    started = time.perf_counter()
    init, reference = jax_train_step(case.apply, reference_loss, compute_dtype(precision))
    state = {"params": jax.tree_util.tree_map(jnp.array, initial)}
    state["opt"] = init(state["params"])
    state["params"], state["opt"], loss = reference(state["params"], state["opt"], x, y)
    jax.block_until_ready(loss)
    reference_compile = time.perf_counter() - started
    if not np.isclose(first_loss, float(loss), rtol=FIRST_LOSS_RTOL[precision]):  # same weights and batch
        raise AssertionError(
            f"{name}: the JAX reference is not the same model (loss {float(loss)} vs zkynet's {first_loss})"
        )

    def reference_run():
        state["params"], state["opt"], value = reference(state["params"], state["opt"], x, y)
        return value

    if steps is None:  # rounds of about 50 ms each
        steps = max(3, int(0.05 / best_seconds_per_call(reference_run, 1, 3, warmup=0)))
    contenders = {
        "zkynet": lambda: best_seconds_per_call(lambda: ours(x, y)["loss"], 1, steps, warmup=ROUND_WARMUP),
        "jax": lambda: best_seconds_per_call(reference_run, 1, steps, warmup=ROUND_WARMUP),
    }
    torch = (
        TorchProcess(torch_python, case.torch, batch)
        if case.torch and torch_python and scale == 1 and precision == "float32"
        else None
    )
    if torch is not None:
        contenders["torch"] = lambda: torch(steps)
    samples: dict[str, list[float]] = {n: [] for n in contenders}
    try:
        names = list(contenders)
        for r in range(rounds):  # interleaved, so a slow patch of the machine hits every contender,
            for n in names[r % len(names) :] + names[: r % len(names)]:  # each one first in turn
                samples[n].append(contenders[n]())
                if torch is not None:
                    time.sleep(SETTLE_S)
    finally:
        if torch is not None:
            torch.close()
    times = {n: statistics.median(t) for n, t in samples.items()}
    flops = step_flops(ours, x, y)
    return dict(
        model=name,
        batch=batch,
        zkynet_step_ms=times["zkynet"] * 1e3,
        jax_step_ms=times["jax"] * 1e3,
        torch_step_ms=times["torch"] * 1e3 if "torch" in times else None,
        step_ratio=times["zkynet"] / times["jax"],
        torch_ratio=times["zkynet"] / times["torch"] if "torch" in times else None,
        zkynet_compile_s=ours_compile,
        jax_compile_s=reference_compile,
        compile_ratio=ours_compile / reference_compile,
        throughput=batch * (case.tokens or 1) / times["zkynet"],
        unit="tokens/s" if case.tokens else "samples/s",
        flops_per_step=flops,
        achieved_tflops=flops / times["zkynet"] / 1e12 if flops else None,
    )


def add_arguments(parser):
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--gpu", action="store_true", help="GPU sizes (GPU_CASES); PyTorch is left out")
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "bf16"],
        help="bf16: mixed precision (float32 weights, bfloat16 compute); PyTorch is left out",
    )
    parser.add_argument(
        "--batch-scale", type=int, default=1, help="multiply every batch size (PyTorch is left out then)"
    )
    parser.add_argument("--steps", type=int, default=None, help="steps per timing round (default: ~50 ms)")
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds; each contender's median counts")
    parser.add_argument(
        "--torch-python",
        default=default_torch_python(),
        help="an interpreter with torch for the PyTorch reference (default: this one, if it has "
        "torch); it runs in its own process",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's matmul peak, to report achieved FLOP/s against (known GPUs: built in)",
    )
    parser.add_argument("--json", default="outputs/bench/train.json")


def _peak(device, given, precision):
    if given is not None:
        return given
    return next((peak for kind, peak in PEAK_TFLOPS[precision].items() if kind in device.device_kind), None)


def run(args):
    device = jax.devices()[0]
    cases, torch_python = (GPU_CASES, None) if args.gpu else (CASES, args.torch_python)
    peak = _peak(device, args.peak_tflops, args.precision)
    print(
        f"train step: zkynet compiled vs plain JAX vs PyTorch eager (jax {jax.__version__}, "
        f"{device.platform}: {device.device_kind}, {os.cpu_count()} cpus, {args.precision}); "
        f"medians of {args.rounds} rounds"
    )
    print(f"targets: step ratio <= {STEP_TARGET}, compile ratio <= {COMPILE_TARGET}")
    print(
        f"{'model':<14}{'batch':>6}{'zkynet':>10}{'jax':>10}{'torch':>10}{'zk/jax':>8}{'zk/torch':>9}"
        f"{'compile zk':>12}{'jax':>8}{'ratio':>7}{'throughput':>22}{'TFLOP/s':>9}{'of peak':>8}"
    )
    rows = []
    for name in args.models:
        row = measure(name, cases[name], args.batch_scale, args.steps, args.rounds, torch_python, args.precision)
        row["peak_share"] = row["achieved_tflops"] / peak if peak and row["achieved_tflops"] else None
        rows.append(row)
        torch_ms = f"{row['torch_step_ms']:.2f}ms" if row["torch_step_ms"] is not None else "n/a"
        torch_ratio = f"{row['torch_ratio']:.2f}" if row["torch_ratio"] is not None else "n/a"
        tflops = f"{row['achieved_tflops']:.3f}" if row["achieved_tflops"] else "n/a"
        share = f"{row['peak_share']:.1%}" if row["peak_share"] else "n/a"
        print(
            f"{name:<14}{row['batch']:>6}{row['zkynet_step_ms']:>8.2f}ms{row['jax_step_ms']:>8.2f}ms"
            f"{torch_ms:>10}{row['step_ratio']:>8.2f}{torch_ratio:>9}{row['zkynet_compile_s']:>11.2f}s"
            f"{row['jax_compile_s']:>7.2f}s{row['compile_ratio']:>7.2f}"
            f"{row['throughput']:>12.4g} {row['unit']:<9}{tflops:>9}{share:>8}",
            flush=True,
        )
    write_result(
        args.json,
        dict(
            benchmark="train",
            jax=jax.__version__,
            device=str(device),
            machine=platform.machine(),
            cpus=os.cpu_count(),
            gpu_sizes=args.gpu,
            precision=args.precision,
            peak_tflops=peak,
            rounds=args.rounds,
            rows=rows,
        ),
    )
