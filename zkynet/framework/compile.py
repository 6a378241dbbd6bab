"""Compiled training and evaluation.

A TrainStep traces the model's forward pass, zkynet's own back(), the loss and
the optimizer update once under `jax.jit`: each step is then one XLA program
and no Python runs per step. Gradients come from the graph's hand-written
rules, never from `jax.grad`. The model's cg.Parameters stay the source of
truth: a step reads their values and writes the updated ones back, so
`model.param("W").value` always shows the trained weights.

`TrainStep.pure` / `EvalStep.pure` are the underlying pure functions of
(parameter values, optimizer state, batch): jit, vmap or shard them as you like
(zkynet.training.population vmaps them over the members of a population).

Mixed precision (`precision="bf16"`): the parameters (the master weights) and the
optimizer state stay float32; inside the traced step the floating parameters and
inputs are cast to bfloat16, so the model's forward and backward pass compute in
bfloat16 (matmuls at a GPU's bfloat16 peak). The model's output(s) are cast back to
float32 before the loss (an op.astype node), so the loss, its log-softmax and its
reductions over the batch, and the metrics, are float32: a bfloat16 sum (8 bits of
mantissa) drops whatever of each term lies below 1/256 of the running total. The
gradients, bfloat16 like the values they belong to, are cast to float32 before the
optimizer, which updates float32 weights: an update below 1/256 of its weight, which
a bfloat16 weight would round away, still counts. Targets and integer inputs (labels,
token ids) are never cast.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework import cg, op
from zkynet.framework.errors import StateDictError
from zkynet.framework.graph import as_value
from zkynet.framework.memory import keep_freed_memory_once

PRECISIONS = {"float32": None, "bf16": jnp.bfloat16, "bfloat16": jnp.bfloat16}  # the compute dtype (None: no casts)


def compute_dtype(precision):
    """The dtype a step with `precision` computes its model in: None for "float32" (no
    casts: the parameters' own dtype, float32 unless the model was cast, e.g. to
    float64), bfloat16 for "bf16" (or "bfloat16"); anything else is a ValueError."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return PRECISIONS[precision]


class Objective(cg.Module):
    """loss(model(*inputs), targets) as one graph, with the model's output(s) kept as
    extra outputs for metrics; with `output_dtype`, the output(s) are cast to it first
    (float32, for a model computing in bfloat16)."""

    def __init__(self, model, loss, output_dtype=None):
        super().__init__(
            inputs=[cg.Variable(v.short_name) for v in model.inputs] + [cg.Variable("targets")],
            name=f"{model.functional_name}+loss",
        )
        self.model, self.loss, self.output_dtype = model, loss, output_dtype

    def call(self, *args):
        output = self.model(*args[:-1])
        outputs = output if isinstance(output, tuple) else (output,)
        if self.output_dtype is not None:
            outputs = tuple(op.astype(o, self.output_dtype) for o in outputs)
            output = outputs if isinstance(output, tuple) else outputs[0]
        return (self.loss(output, args[-1]),) + outputs


class _Compiled:
    """Parameters by name, the compute precision, and the batch/argument plumbing
    shared by train and eval."""

    def __init__(self, model, loss, metrics, precision):
        keep_freed_memory_once()  # every step allocates and frees its buffers: keep that memory (see memory.py)
        self.model = model
        self.compute_dtype = compute_dtype(precision)
        self.objective = Objective(model, loss, None if self.compute_dtype is None else jnp.float32)
        self.params = model.named_parameters()
        self.metrics = metrics

    def param_values(self):
        return {name: p.value for name, p in self.params.items()}

    def _graph(self, params, batch, rng):
        """The objective's graph on the batch, its parameters and inputs (not the targets)
        in the compute dtype."""
        values = {p: self._compute(params[name]) for name, p in self.params.items()}
        batch = tuple(self._compute(b) for b in batch[:-1]) + tuple(batch[-1:])
        return cg.call_module(self.objective, batch, param_values=values, rng=rng)

    def _compute(self, value):
        """A floating array in the compute dtype; integers (token ids) and, without a
        compute dtype, everything as given."""
        if self.compute_dtype is None or not jnp.issubdtype(jnp.result_type(value), jnp.floating):
            return value
        return jnp.asarray(value).astype(self.compute_dtype)

    def _state_updates(self, graph, params):
        """{name: new value} of the model's cg.State values that the forward pass set, in
        the dtype of the values given (float32 master copies under bf16)."""
        updates = graph.state_updates
        if not updates:
            return {}
        names = {p: name for name, p in self.params.items()}
        return {names[state]: value.astype(params[names[state]].dtype) for state, value in updates.items()}

    def _metrics(self, graph, batch):
        loss, *outputs = graph.roots
        metrics = {"loss": loss.value}
        if self.metrics is not None:
            metrics.update(self.metrics(*[o.value for o in outputs], batch[-1]))
        return metrics


class TrainStep(_Compiled):
    """One optimizer step on a batch `(*inputs, targets)`: forward, back(), update.

    Frozen parameters (`trainable=False`, `module.freeze()`) get no gradient and no
    optimizer state; they and the model's cg.State values (BatchNorm's running
    statistics, set by the forward pass) are carried through the step unchanged or
    updated, and saved with the rest. Freezing or unfreezing between steps is noticed
    at the next step: the optimizer state is rebuilt for the new set (kept for the
    parameters that stay trainable) and the step compiled again.

    `metrics(outputs..., targets)` (plain jnp, optional) adds to the returned
    {"loss": ...}. `seed` drives the per-step PRNG keys (dropout), derived from
    the step count so that a resumed run draws the same keys. `jit=False` runs
    the same step eagerly, node by node (for debugging; same numbers). With
    `parallel` (a parallel.DataParallel), give it batches placed by
    `parallel.batch`: each device computes its part, gradients are all-reduced.
    `precision="bf16"` computes the model in bfloat16 around float32 master weights
    and optimizer state (see the module's docstring); "float32" casts nothing.
    """

    def __init__(
        self, model, loss, optimizer, metrics=None, seed=0, jit=True, donate=True, parallel=None, precision="float32"
    ):
        super().__init__(model, loss, metrics, precision)
        self.optimizer = optimizer
        self.parallel = parallel  # a DataParallel: parameters replicated, batches split over devices
        if parallel is not None:
            for p in self.params.values():
                p.value = parallel.replicate(p.value)
        self.trainable = self._trainable_names()
        self.opt_state = optimizer.init(self.trainable_values(self.param_values()))
        self.step = 0  # mirrors opt_state["step"] on the host: reading that would wait for the device
        self.rng = jax.random.PRNGKey(seed)
        self._jit, self._donate = jit, donate
        self._step = self._compiled()

    def _compiled(self):
        return jax.jit(self.pure, donate_argnums=(0, 1) if self._donate else ()) if self._jit else self.pure

    def _trainable_names(self):
        return tuple(name for name, p in self.params.items() if p.trainable)

    def trainable_values(self, params):
        """The entries of `params` ({name: value}) the optimizer updates (not frozen, not state)."""
        return {name: params[name] for name in self.trainable}

    def pure(self, params, opt_state, batch, rng, hyperparameters=None):
        """(params, opt_state, batch, rng) -> (params, opt_state, metrics); with
        `hyperparameters`, the optimizer's values come from there (maybe traced: a
        Population's members each have their own). `params` holds every parameter, frozen
        and state included; `opt_state` is the optimizer's state of the trainable ones."""
        graph = self._graph(params, batch, jax.random.fold_in(rng, opt_state["step"]))
        loss = graph.roots[0]
        graph.back((jnp.ones((), loss.dtype),) + (None,) * (len(graph.roots) - 1))
        grads = {
            name: graph.grad(self.params[name]).astype(params[name].dtype)  # the master weights' dtype
            if graph.uses(self.params[name])
            else jnp.zeros_like(params[name])
            for name in self.trainable
        }
        trained, opt_state = self.optimizer.update(grads, opt_state, self.trainable_values(params), hyperparameters)
        new = {**params, **trained}
        new.update(self._state_updates(graph, params))
        return new, opt_state, self._metrics(graph, batch)

    def _refreeze(self):
        """The set of trainable parameters changed since the last step: rebuild the optimizer
        state (keeping the slots of parameters still trainable) and compile again."""
        trainable = self._trainable_names()
        if trainable == self.trainable:
            return
        fresh = self.optimizer.init({name: self.params[name].value for name in trainable})
        self.opt_state = {key: _kept(value, self.opt_state.get(key)) for key, value in fresh.items()}
        self.trainable = trainable
        self._step = self._compiled()

    def __call__(self, *batch):
        check_batch(batch, "TrainStep")
        self._refreeze()
        params, self.opt_state, metrics = self._step(self.param_values(), self.opt_state, batch, self.rng)
        for name, value in params.items():
            self.params[name].value = value
        self.step += 1
        return metrics

    def state_dict(self):
        """Everything needed to continue training exactly: parameters and optimizer state."""
        return {"params": self.param_values(), "optimizer": self.opt_state}

    def load_state_dict(self, state):
        if not isinstance(state, Mapping) or not {"params", "optimizer"} <= set(state):
            raise StateDictError(
                "TrainStep.load_state_dict: expected {'params': ..., 'optimizer': ...} (what state_dict() returns), "
                f"got {type(state).__name__}" + (f" with keys {sorted(state)}" if isinstance(state, Mapping) else "")
            )
        missing = set(self.params) ^ set(state["params"])
        if missing:
            raise KeyError(f"checkpoint and model disagree on parameters: {sorted(missing)}")
        place = self.parallel.replicate if self.parallel is not None else jnp.array  # a copy: steps donate
        for name, value in state["params"].items():
            self.params[name].value = place(jnp.array(value))
        self.opt_state = jax.tree_util.tree_map(lambda v: place(jnp.array(v)), state["optimizer"])
        self.step = int(self.opt_state["step"])


def _kept(fresh, old):
    """An optimizer state entry of a new trainable set: the old one's values where it has the
    same parameter (slots are {name: array}), the fresh ones elsewhere (the step count: old)."""
    if old is None:
        return fresh
    if isinstance(fresh, dict):
        return {name: old[name] if isinstance(old, dict) and name in old else value for name, value in fresh.items()}
    return old


class EvalStep(_Compiled):
    """Loss and metrics of the current parameters on a batch, without randomness
    (dropout off, BatchNorm's running statistics), computed in `precision` as TrainStep's
    are. The graph is built inside cg.no_grad(): nothing is kept for a backward pass
    (eagerly, each node's value is freed once the next ones no longer need it; compiled,
    XLA drops it anyway, and op.scan stops stacking activations)."""

    def __init__(self, model, loss, metrics=None, jit=True, precision="float32"):
        super().__init__(model, loss, metrics, precision)
        self._eval = jax.jit(self.pure) if jit else self.pure

    def pure(self, params, batch):
        with cg.no_grad():
            return self._metrics(self._graph(params, batch, None), batch)

    def __call__(self, *batch):
        check_batch(batch, "EvalStep")
        return self._eval(self.param_values(), batch)


def check_batch(batch, where):
    """ValueTypeError naming the batch item a compiled step cannot take (a string, None,
    an object), instead of JAX's error about abstract arrays. Arrays pass as they are
    (no copy: this runs every step)."""
    for i, item in enumerate(jax.tree_util.tree_leaves(batch, is_leaf=lambda x: x is None)):
        if isinstance(item, jax.Array) or (isinstance(item, np.ndarray) and item.dtype.kind in "biufcV"):
            continue
        as_value(item, f"{where}: batch item {i}")


def forward(model, jit=True):
    """A function of the model's inputs returning its output value(s) with the current
    parameters (compiled once per input shape)."""
    params = model.named_parameters()

    def pure(values, *inputs):
        with cg.no_grad():
            graph = cg.call_module(model, inputs, param_values={p: values[n] for n, p in params.items()})
        return graph.value

    run = jax.jit(pure) if jit else pure
    return lambda *inputs: run({name: p.value for name, p in params.items()}, *inputs)
