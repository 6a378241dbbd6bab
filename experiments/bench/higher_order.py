"""Hessian-vector products, compiled: zkynet's own rules vs plain JAX.

The model is the training benchmark's MLP (train.py: widths 64-256-256-10, batch 256,
the same initial weights) with its cross-entropy loss. The product H v with respect to
every weight and bias, each side one jax.jit program:
  zkynet.hvp  zkynet.hvp of the MLP written with op.* (x @ W + b, relu): reverse mode
              over reverse mode, the gradient built as a graph of zkynet operators
              (back(create_graph=True)) and differentiated by their own rules;
  module      the same through the zkynet MLP module: its graph, back(create_graph=True),
              then cg.gradients of <gradient, v> (how a user measures sharpness);
  jax         jax.jvp(jax.grad(f)): forward over reverse, the usual JAX recipe, the yardstick.
Times are medians over interleaved rounds (each round: the best mean of `steps` calls).
Target: zkynet / jax <= 2. The report adds the jaxpr sizes XLA gets from each side.
"""

import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import zkynet
from experiments.bench import write_result
from experiments.bench.timing import best_seconds_per_call
from experiments.bench.train import CASES, cross_entropy, jax_mlp
from zkynet import losses
from zkynet.framework import cg, op

TARGET = 2.0


def zkynet_mlp(params, x):
    """jax_mlp (train.py) with zkynet's operators: params {"layers.i/W": node, ...}."""
    layers = sorted({name.split("/")[0] for name in params}, key=lambda layer: int(layer.split(".")[1]))
    for i, layer in enumerate(layers):
        x = x @ params[f"{layer}/W"] + params[f"{layer}/b"]
        if i < len(layers) - 1:
            x = op.relu(x)
    return x


def contenders(model, x, y):
    """name -> a function of (params, v) -> H v, each to be jitted."""
    names = sorted(model.named_parameters())
    parameters = model.named_parameters()

    def functional(params, v):
        def loss(*values):
            return losses.softmax_cross_entropy(zkynet_mlp(dict(zip(names, values, strict=True)), x), y)

        products = zkynet.hvp(loss, [params[n] for n in names], [v[n] for n in names])
        return dict(zip(names, products, strict=True))

    def module(params, v):
        graph = cg.call_module(model, (x,), param_values={parameters[n]: params[n] for n in names})
        loss = losses.softmax_cross_entropy(graph.root, y)
        nodes = [graph.node(parameters[n]) for n in names]
        gradients = cg.gradients(loss, nodes, create_graph=True)
        products = cg.gradients(gradients, nodes, cotangents=[v[n] for n in names], create_graph=False)
        return dict(zip(names, products, strict=True))

    def reference(params, v):
        return jax.jvp(jax.grad(lambda p: cross_entropy(jax_mlp(p, x), y)), (params,), (v,))[1]

    return {"zkynet.hvp": functional, "module": module, "jax": reference}


def measure(batch, rounds, steps):
    case = CASES["mlp"]
    model = case.build()
    x, y = (jnp.asarray(a) for a in case.data(np.random.default_rng(0), batch))
    params = {n: jnp.array(p.value) for n, p in model.named_parameters().items()}
    rng = np.random.default_rng(1)
    v = {n: jnp.asarray(rng.normal(size=p.shape).astype(np.float32)) for n, p in params.items()}
    functions = contenders(model, x, y)
    compiled, compile_s, equations = {}, {}, {}
    for name, fn in functions.items():
        equations[name] = len(jax.make_jaxpr(fn)(params, v).eqns)
        started = time.perf_counter()
        compiled[name] = jax.jit(fn)
        jax.block_until_ready(compiled[name](params, v))
        compile_s[name] = time.perf_counter() - started
    reference = compiled["jax"](params, v)
    for name in ("zkynet.hvp", "module"):
        ours = compiled[name](params, v)
        for n in params:  # the same product, or the timing means nothing
            np.testing.assert_allclose(ours[n], reference[n], rtol=2e-3, atol=2e-4 * float(jnp.abs(reference[n]).max()))
    samples: dict[str, list[float]] = {name: [] for name in compiled}
    order = list(compiled)
    for r in range(rounds):  # interleaved, each first in turn
        for name in order[r % len(order) :] + order[: r % len(order)]:
            fn = compiled[name]
            samples[name].append(best_seconds_per_call(lambda fn=fn: fn(params, v), 1, steps, warmup=2))
    times = {name: statistics.median(t) for name, t in samples.items()}
    return [
        dict(
            contender=name,
            batch=batch,
            ms=times[name] * 1e3,
            ratio=times[name] / times["jax"],
            spread_ms=(min(samples[name]) * 1e3, max(samples[name]) * 1e3),
            compile_s=compile_s[name],
            jaxpr_equations=equations[name],
        )
        for name in compiled
    ]


def add_arguments(parser):
    parser.add_argument("--batch", type=int, default=CASES["mlp"].batch)
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds; each contender's median counts")
    parser.add_argument("--steps", type=int, default=20, help="calls per round")
    parser.add_argument("--json", default="outputs/bench/higher_order.json")


def run(args):
    device = jax.devices()[0]
    print(
        f"Hessian-vector product of the benchmark MLP (64-256-256-10, batch {args.batch}), compiled "
        f"(jax {jax.__version__}, {device.platform}: {device.device_kind}, {os.cpu_count()} cpus); "
        f"medians of {args.rounds} rounds; target zkynet/jax <= {TARGET}"
    )
    print(f"{'contender':<12}{'time':>10}{'range':>20}{'vs jax':>8}{'compile':>9}{'jaxpr eqns':>12}")
    rows = measure(args.batch, args.rounds, args.steps)
    for row in rows:
        low, high = row["spread_ms"]
        print(
            f"{row['contender']:<12}{row['ms']:>8.3f}ms{f'{low:.3f}-{high:.3f} ms':>20}{row['ratio']:>8.2f}"
            f"{row['compile_s']:>8.2f}s{row['jaxpr_equations']:>12}",
            flush=True,
        )
    write_result(
        args.json,
        dict(
            benchmark="higher_order",
            jax=jax.__version__,
            device=str(device),
            machine=platform.machine(),
            cpus=os.cpu_count(),
            rounds=args.rounds,
            rows=rows,
        ),
    )
