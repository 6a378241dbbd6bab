"""New operators and layers compiled vs the same function in plain JAX, and the compile time of an unrolled chain.

For each case, two compiled programs per contender, timed in the same run, interleaved:
  forward   zkynet: the graph's value under jax.jit; JAX: jax.jit of the jnp function;
  backward  zkynet: forward + back(ones) + every gradient (inputs and parameters), our
            rules; JAX: jax.jit(jax.value_and_grad(sum of the jnp function)), JAX's autodiff.
The ratio is zkynet's time over JAX's (target <= 1.1). Layers run as in training (an
rng: BatchNorm on batch statistics).

`--chain N` also compiles one training step (forward, back(), SGD) of an unrolled chain of
N steps tanh(x @ W + b) (3N nodes) against the same step in plain JAX, and reports the
time to trace (Python) and to compile (XLA) each.
"""

import os
import platform
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from experiments.bench import write_result
from experiments.bench.timing import best_seconds_per_call
from zkynet import optim
from zkynet.framework import cg, op
from zkynet.framework.compile import TrainStep
from zkynet.models.layers import BatchNorm, GroupNorm, RMSNorm

TARGET = 1.1


class _Case(cg.Module):
    """`fn` of the inputs (and of `layer`, a module whose parameters are the case's)."""

    def __init__(self, fn, count, layer=None):
        super().__init__(inputs=[cg.Variable(f"x{i}") for i in range(count)])
        self.fn, self.layer = fn, layer

    def call(self, *xs):
        return self.fn(self.layer, *xs) if self.layer is not None else self.fn(*xs)


def _normal(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _conv(x, w, stride, padding, dilation, groups, spec):
    return lax.conv_general_dilated(
        x, w, stride, padding, rhs_dilation=dilation, dimension_numbers=spec, feature_group_count=groups
    )


def _conv_transpose2d(x, w, stride, padding):
    """PyTorch's conv_transpose2d as JAX writes it: lhs-dilated, flipped kernel (groups 1)."""
    k = w.shape[2:]
    pads = [(kk - 1 - padding, kk - 1 - padding) for kk in k]
    kernel = jnp.flip(w, (2, 3))
    return lax.conv_general_dilated(
        x, kernel, (1, 1), pads, lhs_dilation=stride, dimension_numbers=("NCHW", "IOHW", "NCHW")
    )


def _normalized(x, axes, eps=1e-5):
    centered = x - jnp.mean(x, axes, keepdims=True)
    return centered * lax.rsqrt(jnp.mean(centered * centered, axes, keepdims=True) + eps)


def cases():
    """name -> (zkynet fn, JAX fn(params, *inputs), inputs, layer or None, integer inputs to leave alone)."""
    idx_along = jnp.asarray(np.random.default_rng(1).integers(0, 512, size=(512, 64)))
    rows = jnp.asarray(np.random.default_rng(2).integers(0, 1024, size=4096))
    plain = {
        "sin": (op.sin, jnp.sin, [_normal((512, 512))]),
        "cos": (op.cos, jnp.cos, [_normal((512, 512))]),
        "erf": (op.erf, jax.scipy.special.erf, [_normal((512, 512))]),
        "einsum bij,bjk": (
            lambda a, b: op.einsum("bij,bjk->bik", a, b),
            lambda a, b: jnp.einsum("bij,bjk->bik", a, b),
            [_normal((16, 64, 64)), _normal((16, 64, 64), 1)],
        ),
        "einsum bhqd,bhkd": (
            lambda a, b: op.einsum("bhqd,bhkd->bhqk", a, b),
            lambda a, b: jnp.einsum("bhqd,bhkd->bhqk", a, b),
            [_normal((8, 4, 64, 32)), _normal((8, 4, 64, 32), 1)],
        ),
        "take_along_axis": (
            lambda x: op.take_along_axis(x, idx_along, 1),
            lambda x: jnp.take_along_axis(x, idx_along, 1),
            [_normal((512, 512))],
        ),
        "scatter_add": (
            lambda x, u: op.scatter_add(x, rows, u),
            lambda x, u: x.at[rows].add(u),
            [_normal((1024, 64)), _normal((4096, 64), 1)],
        ),
        "pad": (lambda x: op.pad(x, ((3, 5), (2, 2))), lambda x: jnp.pad(x, ((3, 5), (2, 2))), [_normal((512, 512))]),
        "cumsum": (lambda x: op.cumsum(x, 1), lambda x: jnp.cumsum(x, 1), [_normal((512, 512))]),
        "prod": (lambda x: op.prod(x, 1), lambda x: jnp.prod(x, 1), [1 + 0.01 * _normal((512, 64))]),
        "min": (lambda x: op.min(x, 1), lambda x: jnp.min(x, 1), [_normal((512, 512))]),
        "sort": (lambda x: op.sort(x, 1), lambda x: jnp.sort(x, 1), [_normal((256, 256))]),
        "topk": (lambda x: op.topk(x, 16)[0], lambda x: lax.top_k(x, 16)[0], [_normal((256, 1024))]),
        "conv1d same": (
            lambda x, w: op.conv1d(x, w, padding="same"),
            lambda x, w: _conv(x, w, (1,), "SAME", (1,), 1, ("NCH", "OIH", "NCH")),
            [_normal((16, 32, 256)), _normal((64, 32, 5), 1)],
        ),
        "conv2d dil2 groups4": (
            lambda x, w: op.conv2d(x, w, padding=2, dilation=2, groups=4),
            lambda x, w: _conv(x, w, (1, 1), ((2, 2), (2, 2)), (2, 2), 4, ("NCHW", "OIHW", "NCHW")),
            [_normal((8, 32, 32, 32)), _normal((32, 8, 3, 3), 1)],
        ),
        "conv2d stride2": (
            lambda x, w: op.conv2d(x, w, stride=2, padding=1),
            lambda x, w: _conv(x, w, (2, 2), ((1, 1), (1, 1)), (1, 1), 1, ("NCHW", "OIHW", "NCHW")),
            [_normal((8, 16, 32, 32)), _normal((32, 16, 3, 3), 1)],
        ),
        "conv3d": (
            lambda x, w: op.conv3d(x, w, padding=1),
            lambda x, w: _conv(x, w, (1, 1, 1), ((1, 1),) * 3, (1, 1, 1), 1, ("NCDHW", "OIDHW", "NCDHW")),
            [_normal((2, 8, 16, 16, 16)), _normal((16, 8, 3, 3, 3), 1)],
        ),
        "conv_transpose2d s2": (
            lambda x, w: op.conv_transpose2d(x, w, stride=2, padding=1),
            lambda x, w: _conv_transpose2d(x, w, (2, 2), 1),
            [_normal((8, 32, 16, 16)), _normal((32, 16, 4, 4), 1)],
        ),
        "rms_norm": (
            op.rms_norm,
            lambda x: x * lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6),
            [_normal((256, 512))],
        ),
    }
    found: dict[str, tuple[Any, ...]] = {
        name: (fn, lambda params, *xs, f=ref: f(*xs), xs, None) for name, (fn, ref, xs) in plain.items()
    }

    def shaped(v):
        return v.reshape(1, -1, 1, 1)

    found["BatchNorm (train)"] = (
        lambda layer, x: layer(x),
        lambda p, x: _normalized(x, (0, 2, 3)) * shaped(p["layer/scale"]) + shaped(p["layer/shift"]),
        [_normal((32, 64, 16, 16))],
        BatchNorm(64),
    )
    found["GroupNorm"] = (
        lambda layer, x: layer(x),
        lambda p, x: (
            _normalized(x.reshape(32, 8, -1), -1).reshape(x.shape) * shaped(p["layer/scale"]) + shaped(p["layer/shift"])
        ),
        [_normal((32, 64, 16, 16))],
        GroupNorm(8, 64),
    )
    found["RMSNorm"] = (
        lambda layer, x: layer(x),
        lambda p, x: x * lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * p["layer/scale"],
        [_normal((256, 512))],
        RMSNorm(512),
    )
    return found


def measure(name, fn, reference, inputs, layer, repeats):
    module = _Case(fn, len(inputs), layer)
    params = module.named_parameters()
    values = {n: p.value for n, p in params.items()}
    trainable = [n for n, p in params.items() if p.trainable]
    key = jax.random.PRNGKey(0)

    def graph(values, *xs):
        return cg.call_module(module, xs, param_values={p: values[n] for n, p in params.items()}, rng=key)

    def ours_forward(values, *xs):
        return graph(values, *xs).value

    def ours_backward(values, *xs):
        g = graph(values, *xs)
        g.back(jnp.ones(g.value.shape, g.value.dtype))
        return g.value, [g.grad(v) for v in module.inputs], [g.grad(params[n]) for n in trainable]

    def theirs_forward(values, *xs):
        return reference(values, *xs)

    def total(train, frozen, *xs):
        return jnp.sum(reference({**frozen, **train}, *xs))

    def theirs_backward(values, *xs):
        train = {n: values[n] for n in trainable}
        frozen = {n: v for n, v in values.items() if n not in train}
        return jax.value_and_grad(total, argnums=(0, *range(2, 2 + len(xs))))(train, frozen, *xs)

    programs = {
        name: jax.jit(f)
        for name, f in [
            ("ours_forward", ours_forward),
            ("ours_backward", ours_backward),
            ("theirs_forward", theirs_forward),
            ("theirs_backward", theirs_backward),
        ]
    }
    best = dict.fromkeys(programs, float("inf"))
    for _ in range(repeats):  # interleaved: a slow patch of the machine hits every contender
        for key_, program in programs.items():
            best[key_] = min(best[key_], best_seconds_per_call(lambda p=program: p(values, *inputs), 1, 5))
    return dict(
        case=name,
        shapes=[list(x.shape) for x in inputs],
        forward_us=best["ours_forward"] * 1e6,
        jax_forward_us=best["theirs_forward"] * 1e6,
        backward_us=best["ours_backward"] * 1e6,
        jax_backward_us=best["theirs_backward"] * 1e6,
        forward_ratio=best["ours_forward"] / best["theirs_forward"],
        backward_ratio=best["ours_backward"] / best["theirs_backward"],
    )


class Chain(cg.Module):
    """n steps of tanh(x @ W + b), unrolled: 3n nodes."""

    def __init__(self, n):
        super().__init__(inputs=(cg.Variable("x"),))
        self.W = cg.Parameter("W", _normal((16, 16)) * 0.2)
        self.b = cg.Parameter("b", jnp.full(16, 0.01))
        self.n = n

    def call(self, x):
        for _ in range(self.n):
            x = op.tanh(x @ self.W + self.b)
        return x


def chain_compile_times(n):
    """{contender: (trace + lower seconds, compile seconds)} for one SGD step of the chain."""
    model = Chain(n)
    step = TrainStep(model, lambda out, t: op.mean((out - t) ** 2), optim.SGD(0.01))
    x, t = jnp.ones((8, 16)), jnp.zeros((8, 16))
    sgd = optim.SGD(0.01)

    def loss(p, x, t):
        for _ in range(n):
            x = jnp.tanh(x @ p["W"] + p["b"])
        return jnp.mean((x - t) ** 2)

    def plain_step(p, s, x, t):
        value, g = jax.value_and_grad(loss)(p, x, t)
        p, s = sgd.update(g, s, p)
        return p, s, {"loss": value}

    params = step.param_values()
    found = {}
    for name, lower in [
        ("zkynet", lambda: step._step.lower(step.param_values(), step.opt_state, (x, t), step.rng)),
        ("jax", lambda: jax.jit(plain_step, donate_argnums=(0, 1)).lower(params, sgd.init(params), x, t)),
    ]:
        start = time.perf_counter()
        lowered = lower()
        traced = time.perf_counter()
        lowered.compile()
        found[name] = (traced - start, time.perf_counter() - traced)
    return found


def add_arguments(parser):
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="cases to run (default: all)")
    parser.add_argument("--chain", type=int, default=1000, help="steps of the unrolled chain (3 nodes each); 0: skip")
    parser.add_argument("--json", default="outputs/bench/operators.json", help="where to write results")


def run(args):
    print(
        f"zkynet's new operators compiled vs plain JAX (jax {jax.__version__}, {jax.devices()[0].platform}, "
        f"{os.cpu_count()} cpus); ratio = zkynet / JAX, target <= {TARGET}"
    )
    print(f"{'case':<22}{'fwd us':>10}{'JAX fwd':>10}{'ratio':>7}{'fwd+bwd us':>12}{'JAX':>10}{'ratio':>7}")
    rows = []
    for name, (fn, reference, inputs, layer) in cases().items():
        if args.only and name not in args.only:
            continue
        row = measure(name, fn, reference, inputs, layer, args.repeats)
        rows.append(row)
        flag = "" if max(row["forward_ratio"], row["backward_ratio"]) <= TARGET else "  > target"
        print(
            f"{name:<22}{row['forward_us']:>10.1f}{row['jax_forward_us']:>10.1f}{row['forward_ratio']:>7.2f}"
            f"{row['backward_us']:>12.1f}{row['jax_backward_us']:>10.1f}{row['backward_ratio']:>7.2f}{flag}",
            flush=True,
        )
    if rows:
        print(
            f"geometric mean ratio: forward {statistics.geometric_mean([r['forward_ratio'] for r in rows]):.2f}, "
            f"forward+backward {statistics.geometric_mean([r['backward_ratio'] for r in rows]):.2f}"
        )
    chain = {}
    if args.chain:
        chain = chain_compile_times(args.chain)
        (zk_trace, zk_compile), (jax_trace, jax_compile) = chain["zkynet"], chain["jax"]
        print(
            f"unrolled chain of {args.chain} steps ({3 * args.chain} nodes), one SGD step: zkynet trace "
            f"{zk_trace:.2f}s + compile {zk_compile:.2f}s; JAX trace {jax_trace:.2f}s + compile {jax_compile:.2f}s; "
            f"total ratio {(zk_trace + zk_compile) / (jax_trace + jax_compile):.2f} (target <= 2)"
        )
    write_result(
        args.json,
        dict(
            benchmark="operators",
            jax=jax.__version__,
            machine=platform.machine(),
            cpus=os.cpu_count(),
            target=TARGET,
            rows=rows,
            chain={k: dict(trace_s=v[0], compile_s=v[1]) for k, v in chain.items()},
            chain_steps=args.chain,
        ),
    )
