"""Eager cost per operator node: zkynet forward + backward vs one plain jnp call.

For each operator, a module applies it to K separate parameter sets (K
independent nodes, like the layers of a model). One step builds that graph,
runs back() with one cotangent per output and reads every gradient. The step
time divided by K is zkynet's cost per node; the reference is one eager jnp
call of the same operation on the same shapes, timed in the same run. The
backward rules must dispatch their own array calls (mult needs two), so a ratio
near 1 + (calls in the rule) is the floor; the target is <= 4.

That reference frees each result before the next call, so its output buffer is
reused, hot in the cache; the graph keeps every node's output and gradients, each
fresh memory (at 256x256, K x 256 KB per array). A second reference makes the jnp
call K times and keeps every result, as the graph keeps its nodes' values: the
ratio to it (`per-node ratio`) leaves that memory traffic out.
"""

import os
import platform
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench import write_result
from experiments.bench.timing import best_seconds_per_call
from zkynet.framework import cg, op

TARGET = 4.0


def cases(size):
    """name -> (zkynet function, plain jnp function, input shapes) at a given size."""
    square = [(size, size)]
    batch = max(size // 8, 1)
    return {
        "add": (op.add, jnp.add, square * 2),
        "mult": (op.mult, jnp.multiply, square * 2),
        "div": (op.div, jnp.divide, square * 2),
        "exp": (op.exp, jnp.exp, square),
        "tanh": (op.tanh, jnp.tanh, square),
        "relu": (op.relu, jax.nn.relu, square),
        "sum(axis=-1)": (lambda x: op.sum(x, axis=-1), lambda x: jnp.sum(x, axis=-1), square),
        "softmax": (op.softmax, jax.nn.softmax, square),
        "matmul": (op.matmul, jnp.matmul, square * 2),
        "getitem[1:]": (lambda x: x[1:], lambda x: x[1:], square),
        "conv2d": (
            op.conv2d,
            lambda x, w: jax.lax.conv_general_dilated(
                x, w, (1, 1), ((0, 0), (0, 0)), dimension_numbers=("NCHW", "OIHW", "NCHW")
            ),
            [(batch, 8, 16, 16), (8, 8, 3, 3)],
        ),
        "max_pool2d": (
            lambda x: op.max_pool2d(x, 2),
            lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"),
            [(batch, 8, 16, 16)],
        ),
    }


class Fan(cg.Module):
    """`fn` applied to each of `copies` parameter sets: that many independent nodes."""

    def __init__(self, fn, arrays, copies):
        groups = [[cg.Parameter(f"p{i}_{j}", a) for j, a in enumerate(arrays)] for i in range(copies)]
        super().__init__(params=[p for group in groups for p in group])
        self.fn, self.groups = fn, groups

    def call(self):
        return tuple(self.fn(*group) for group in self.groups)


def measure(name, fn, reference, shapes, nodes, repeats):
    rng = np.random.default_rng(0)
    arrays = [jnp.asarray(rng.uniform(0.5, 1.5, size=s), jnp.float32) for s in shapes]
    model = Fan(fn, arrays, nodes)
    cotangents = tuple(jnp.ones_like(o) for o in model().value)

    def forward():
        return model().value

    def step():
        result = model()
        result.back(cotangents)
        return [result.grad(p) for p in model.params]

    def plain():
        return reference(*arrays)

    def plain_per_node():
        return [reference(*arrays) for _ in range(nodes)]

    best = dict(step=float("inf"), forward=float("inf"), plain=float("inf"), per_node=float("inf"))
    for _ in range(repeats):  # interleaved, so a slow patch of the machine hits them all
        best["step"] = min(best["step"], best_seconds_per_call(step, 1, 3) / nodes)
        best["forward"] = min(best["forward"], best_seconds_per_call(forward, 1, 3) / nodes)
        best["plain"] = min(best["plain"], best_seconds_per_call(plain, 1, 100))
        best["per_node"] = min(best["per_node"], best_seconds_per_call(plain_per_node, 1, 3) / nodes)
    return dict(
        op=name,
        shapes=[list(s) for s in shapes],
        jnp_call_us=best["plain"] * 1e6,
        jnp_call_per_node_us=best["per_node"] * 1e6,
        zkynet_forward_us=best["forward"] * 1e6,
        zkynet_forward_backward_us=best["step"] * 1e6,
        ratio=best["step"] / best["plain"],
        per_node_ratio=best["step"] / best["per_node"],
    )


def add_arguments(parser):
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[32, 256], help="side of the square operands (conv/pool batch = size/8)"
    )
    parser.add_argument("--nodes", type=int, default=64, help="operator nodes per graph")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", nargs="*", help="operators to run (default: all)")
    parser.add_argument("--json", default="outputs/bench/core.json", help="where to write results")


def run(args):
    print(
        f"zkynet eager cost per operator node vs one jnp call (jax {jax.__version__}, "
        f"{jax.devices()[0].platform}, {os.cpu_count()} cpus); target ratio <= {TARGET}"
    )
    print(
        f"{'op':<14}{'shapes':<26}{'jnp call':>10}{'per node':>10}{'zk fwd':>10}{'zk fwd+bwd':>12}{'ratio':>8}"
        f"{'per-node ratio':>16}"
    )
    rows = []
    for size in args.sizes:
        for name, (fn, reference, shapes) in cases(size).items():
            if args.only and name not in args.only:
                continue
            row = measure(name, fn, reference, shapes, args.nodes, args.repeats)
            rows.append(row)
            flag = "" if row["ratio"] <= TARGET else "  > target"
            print(
                f"{name:<14}{' '.join('x'.join(map(str, s)) for s in shapes):<26}"
                f"{row['jnp_call_us']:>8.1f}us{row['jnp_call_per_node_us']:>8.1f}us{row['zkynet_forward_us']:>8.1f}us"
                f"{row['zkynet_forward_backward_us']:>10.1f}us{row['ratio']:>8.2f}{row['per_node_ratio']:>16.2f}{flag}",
                flush=True,
            )
    ratios = [r["ratio"] for r in rows]
    print(
        f"geometric mean ratio {statistics.geometric_mean(ratios):.2f}, worst {max(ratios):.2f} "
        f"({max(rows, key=lambda r: r['ratio'])['op']})"
    )
    write_result(
        args.json,
        dict(
            benchmark="core",
            jax=jax.__version__,
            machine=platform.machine(),
            cpus=os.cpu_count(),
            nodes=args.nodes,
            target=TARGET,
            rows=rows,
        ),
    )
