"""Loops: a module run along a sequence as one node (op.scan)."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from zkynet.framework.builder import NodeLike
from zkynet.framework.graph import Node, OperatorNode, ParameterNode, context
from zkynet.framework.module import Module, build_graph
from zkynet.framework.operator import Operator
from zkynet.framework.ops.linalg import Matmul

__all__ = ["Scan", "scan"]


class Scan(Operator):
    """Run the module `cell` along the leading axis of the `xs` inputs (lax.scan): step t
    computes cell(*xs[t], *carry) -> the new carry (a node or a tuple of nodes, each
    (..., width)). The output stacks every step's new carry, concatenated along the
    last axis: (T, ..., total width).

    One node stands for the whole loop, so the compiled program (and its compile
    time) does not grow with T. The forward scan also keeps, for every step, the
    values that backward rules read (the activations: see Operator.vjp_uses_*), as
    the node's `saved` (see Operator.forward); the backward pass is a reverse scan
    that rebuilds each step's graph, puts those saved values back into its nodes and
    applies zkynet's own back(): backpropagation through time, where the rebuilt
    forward computations are dead code that XLA drops.

    A parameter used only as the matrix on the right of matmuls (`h @ U`) gets no
    gradient inside the reverse loop: each step hands out its left operand and the
    cotangent of the product, and after the loop dU is one large matmul over all
    steps at once. Only the recurrent path (the previous state's cotangent) stays
    step by step, instead of one small weight-gradient matmul per step (what
    jax.grad of lax.scan computes).
    Inputs: *xs, *initial carry, *the cell's parameters (so their gradients flow).
    """

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    variadic = True
    # The rule is a lax.scan over arrays: it cannot run on nodes (backward_graph reads these)
    differentiable_rule = False
    differentiable_rule_advice = (
        "op.scan's backward pass is one reverse lax.scan over arrays, not a graph of operators. For "
        "derivatives of derivatives through a recurrent model, unroll the loop so that every step is "
        "a graph of its own (Recurrent(..., unroll=True), or a Python loop calling the cell per step); "
        "op.fori_loop with a fixed trip count unrolls a bounded loop the same way"
    )

    def __init__(self, cell, n_xs, n_carry):
        super().__init__()
        self.cell, self.n_xs, self.n_carry = cell, n_xs, n_carry
        self.cell_params = tuple(cell.named_parameters().values())

    @property
    def functional_name(self):
        return f"scan({self.cell.functional_name})"

    def _parts(self, values):
        return (values[: self.n_xs], values[self.n_xs : self.n_xs + self.n_carry], values[self.n_xs + self.n_carry :])

    def _step(self, xs_t, carry, params):
        """The graph of one step, and its operator nodes whose values some backward rule
        reads (what the forward pass keeps; the rest is recomputed only if needed)."""
        graph = build_graph(self.cell, (*xs_t, *carry), param_values=dict(zip(self.cell_params, params, strict=True)))
        read: set[Node] = set()
        for node in graph.nodes:
            if isinstance(node, OperatorNode):
                if node.ref.vjp_uses_out:
                    read.add(node)
                if node.ref.vjp_uses_inputs:
                    read.update(node.inputs)
        return graph, [n for n in graph.nodes if isinstance(n, OperatorNode) and n in read]

    def forward(self, *nodes):
        xs, carry, params = self._parts([n.value for n in nodes])
        keep = context.grad_enabled  # inside cg.no_grad() nothing will read the activations

        def step(carry, xs_t):
            graph, computed = self._step(xs_t, carry, params)
            new = tuple(root.value for root in graph.roots)
            return new, (jnp.concatenate(new, axis=-1), tuple(n.value for n in computed) if keep else ())

        ys, activations = lax.scan(step, tuple(carry), tuple(xs))[1]
        return ys, activations if keep else None

    def vjp(self, g, out, *nodes, saved=None):
        xs, carry, params = self._parts([n.value for n in nodes])
        bounds = np.cumsum([c.shape[-1] for c in carry])[:-1]

        def split(a):
            return jnp.split(a, bounds, axis=-1)

        entering = [jnp.concatenate([c[None], s[:-1]]) for c, s in zip(carry, split(out), strict=True)]
        # per hoisted matmul: (parameter index, where its left operand and cotangent are stacked)
        plan: list[tuple[int, list[tuple[str, int]]]] = []

        def back_step(totals, step_values):
            d_carry, d_params = totals
            xs_t, carry_t, activations_t, g_t = step_values
            graph, computed = self._step(xs_t, carry_t, params)
            for node, value in zip(computed, activations_t, strict=True):
                node.value = value  # the forward's own values: no recomputation survives
            products = _weight_products(graph, self.cell_params)
            for _, product in products:
                product.inputs[1].requires_grad = False  # its gradient comes after the loop
            graph.back(tuple(a + b for a, b in zip(g_t, d_carry, strict=True)))
            d_inputs = [graph.grad(v) for v in self.cell.inputs]
            hoisted = {index for index, _ in products}
            d_params = tuple(
                total + graph.grad(p) if graph.uses(p) and i not in hoisted else total
                for i, (total, p) in enumerate(zip(d_params, self.cell_params, strict=True))
            )
            # a factor the loop stacks anyway (a sequence, the entering carry, d xs) is not stacked twice
            known = {id(v): ("xs", i) for i, v in enumerate(xs_t)}
            known.update({id(v): ("carry", i) for i, v in enumerate(carry_t)})
            known.update({id(v): ("d_xs", i) for i, v in enumerate(d_inputs[: self.n_xs])})
            extra: list[jax.Array] = []
            plan.clear()
            for index, product in products:
                places = []
                for value in (product.inputs[0].value, graph.grad(product)):
                    if id(value) not in known:
                        known[id(value)] = ("extra", len(extra))
                        extra.append(value)
                    places.append(known[id(value)])
                plan.append((index, places))
            return (tuple(d_inputs[self.n_xs :]), d_params), (tuple(d_inputs[: self.n_xs]), tuple(extra))

        zeros = (tuple(jnp.zeros_like(c) for c in carry), tuple(jnp.zeros_like(p) for p in params))
        # the output's cotangent split per carry before the loop: split inside, every fusion that
        # reads a carry's part re-sliced the step's row of g element by element (~3x slower, measured)
        per_step = (tuple(xs), tuple(entering), saved, tuple(split(g)))
        (d_carry, d_params), (d_xs, extra) = lax.scan(back_step, zeros, per_step, reverse=True)
        stacked = {"xs": xs, "carry": entering, "d_xs": d_xs, "extra": extra}
        summed = list(d_params)
        for index in {index for index, _ in plan}:  # sum over steps (and batch) of left^T @ cotangent
            summed[index] = sum(
                _flat(stacked[a][i]).T @ _flat(stacked[b][j]) for k, ((a, i), (b, j)) in plan if k == index
            )
        return (*d_xs, *d_carry, *summed)


def _weight_products(graph, params):
    """[(parameter index, matmul node)] for each parameter of `params` (a matrix) whose
    every use in `graph` is as the right operand of a matmul."""
    index = {p: i for i, p in enumerate(params)}
    products: dict = {}
    for node in graph.nodes:
        if not isinstance(node, OperatorNode):
            continue
        for place, inp in enumerate(node.inputs):
            if isinstance(inp, ParameterNode) and inp.ref in index:
                weight = (
                    isinstance(node.ref, Matmul) and place == 1 and inp.value.ndim == 2 and node.inputs[0] is not inp
                )
                uses = products.setdefault(inp, [])
                uses.append(node if weight else None)
    return [(index[p.ref], node) for p, uses in products.items() if None not in uses for node in uses]


def _flat(a):
    """All leading axes (steps, batch) merged into one: (N, last)."""
    return a.reshape(-1, a.shape[-1])


def scan(cell: Module, carry: Sequence[NodeLike], xs: Sequence[NodeLike]) -> Node:
    """cell(*xs[t], *carry) along axis 0 of each of `xs`; see Scan. `carry` and `xs`
    are sequences of nodes or arrays."""
    carry, xs = tuple(carry), tuple(xs)
    loop = Scan(cell, len(xs), len(carry))
    return loop(*xs, *carry, *loop.cell_params)
