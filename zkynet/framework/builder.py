"""The state of a graph while a top-level module call builds it.

A top-level call creates one GraphBuilder (its call id, one node per parameter
used, the nodes each input was bound to, the PRNG key) and a ModuleCall scope;
calls nested inside open child scopes in the same builder, so one top-level call
gives one flat graph. `graph.context` says which builder and scope are active.
"""

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax

from zkynet.framework.errors import ShapeError, UnregisteredParameterError, ValueTypeError, ZkynetError
from zkynet.framework.graph import ArrayLike, ConstantNode, InputNode, Node, ParameterNode, as_value, context
from zkynet.framework.module_call import ModuleCall
from zkynet.framework.module_graph import ModuleGraph
from zkynet.framework.templates import Constant, Parameter, State, Variable
from zkynet.init import key_of

NodeLike = Node | Parameter | Constant | ModuleGraph | ArrayLike  # what an operator accepts

_next_call_id = itertools.count(1).__next__


def as_node(x: NodeLike, what: str = "value") -> Node:
    """The node for anything an operator accepts: a node, a parameter, a constant or a
    value (`what` names it in errors)."""
    if isinstance(x, Node):
        return x
    if isinstance(x, Parameter):
        builder = context.builder
        return builder.param_node(x) if builder is not None else ParameterNode(x.value, x)
    if isinstance(x, ModuleGraph):
        if isinstance(x.root, tuple):
            raise ValueTypeError(f"this graph has {len(x.root)} outputs; pass one of graph.root")
        return x.root
    if isinstance(x, Constant):
        return ConstantNode(x.value, x)
    if isinstance(x, Variable):
        raise ValueTypeError(f"{x!r} is an input slot, not a value: inside call(), use the node call() received for it")
    return ConstantNode(as_value(x, what))


class GraphBuilder:
    """State of one top-level call: its id, one node per used parameter, input bindings."""

    def __init__(self, param_values: Mapping[Parameter, jax.Array] | None, rng: Any):
        self.call_id = _next_call_id()
        self.param_values = param_values or {}
        self.param_nodes: dict[Parameter, ParameterNode] = {}
        self.bindings: dict[Variable, list[Node]] = {}  # Variable -> the nodes it was bound to
        self.rng = key_of(rng)
        self.rng_draws = 0
        self.deepest = 0  # the deepest module call so far (0: the top-level call)
        self.no_grad = not context.grad_enabled  # built inside cg.no_grad(): nothing to differentiate
        self.state_updates: dict[State, jax.Array] = {}  # what cg.update_state set during the call

    def param_node(self, param: Parameter) -> ParameterNode:
        node = self.param_nodes.get(param)
        if node is None:
            node = self.param_nodes[param] = ParameterNode(
                self.param_values.get(param, param.value), param, requires_grad=param.trainable
            )
        return node

    def bind(self, variable: Variable, value: Any, module: Any) -> Node:
        if isinstance(value, (Node, Parameter, ModuleGraph, Constant)):
            node = as_node(value)
        else:
            node = InputNode(as_value(value, f"input '{variable.short_name}' of {module.functional_name}"), variable)
        nodes = self.bindings.setdefault(variable, [])
        if node not in nodes:
            nodes.append(node)
        return node

    def check_ownership(self, module: Any, arguments: Iterable[Any]) -> None:
        """Every parameter the graph used is one of `module.named_parameters()` or an
        argument of the call; any other would silently never be trained or saved.
        This runs once per top-level call (under jit: once per trace, not per step)."""
        owned = set(module.named_parameters().values())
        owned.update(a for a in arguments if isinstance(a, Parameter))
        stray = [node for param, node in self.param_nodes.items() if param not in owned]
        if stray:
            top = module.functional_name
            used = "; ".join(f"parameter {n.ref.short_name!r} used at {n.path}" for n in stray)
            raise UnregisteredParameterError(
                f"{top} used parameters that are not in its named_parameters(), so training would "
                f"never update them and state_dict() would leave them out: {used}. Declare each in "
                f"its module's params=(...) and make that module reachable from {top} through "
                "attributes: self.name = module, or a list, tuple or dict of modules (a set or "
                "another object hides it). A parameter meant as an input is passed as an argument."
            )


def run(module: Any, values: list[Any], builder: GraphBuilder, scope: ModuleCall, as_root: bool = False) -> Any:
    """`module.call()` on `values` with `builder` and `scope` active; as the root of a graph,
    its outputs made nodes of this graph (a returned Parameter included)."""
    saved = context.builder, context.scope
    context.builder, context.scope = builder, scope
    try:
        nodes = [
            None if value is None and v.optional else builder.bind(v, value, module)
            for v, value in zip(module.inputs, values, strict=True)
        ]
        output = module.call(*nodes)
        if as_root:
            output = tuple(as_node(o) for o in _flat(output)) if isinstance(output, (tuple, list)) else as_node(output)
        return output
    finally:
        context.builder, context.scope = saved


def _flat(outputs: Iterable[Any]) -> Iterator[Any]:
    """Nested tuples of outputs, flattened: ((a, (b, c)) -> (a, b, c))."""
    for item in outputs:
        if isinstance(item, (tuple, list)):
            yield from _flat(item)
        else:
            yield item


def rng_key() -> jax.Array | None:
    """A fresh PRNG key for randomness inside `call()` (dropout), derived from the
    top-level call's `rng`; None when the call got no `rng`, meaning: run
    deterministically (evaluation)."""
    builder = context.builder
    if builder is None or builder.rng is None:
        return None
    builder.rng_draws += 1
    return jax.random.fold_in(builder.rng, builder.rng_draws)


def training() -> bool:
    """Whether the module call running now trains: it was given an `rng` (TrainStep gives
    one; EvalStep and plain calls do not). Dropout draws masks and BatchNorm uses the
    batch's statistics (and updates its running ones) only then."""
    builder = context.builder
    return builder is not None and builder.rng is not None


def update_state(state: State, value: Any) -> None:
    """Inside call(): give `state` (a cg.State of the module) `value` once this top-level call
    is over (a node or an array, shaped like the state; no gradient flows through it).
    A plain eager call then sets `state.value`; TrainStep returns it with the updated
    parameters; `graph.state_updates` lists them either way."""
    builder = context.builder
    if builder is None:
        raise ZkynetError("cg.update_state is for a module's call(): it takes effect when the call is over")
    if not isinstance(state, State):
        raise ValueTypeError(
            f"cg.update_state sets a cg.State (a module's non-trainable state), got {state!r}; "
            "trainable parameters change through the optimizer"
        )
    array = value.value if isinstance(value, Node) else as_value(value, f"update of state {state.short_name!r}")
    if array.shape != state.value.shape:
        raise ShapeError(
            f"cg.update_state: state {state.short_name!r} is shaped {tuple(state.value.shape)}, "
            f"the update {tuple(array.shape)}"
        )
    builder.state_updates[state] = array


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Build graphs for evaluation only: inside, nodes keep neither their inputs nor what a
    backward rule would read (earlier values are freed as soon as nothing else holds them),
    nothing requires a gradient, and back() on such a graph raises. EvalStep evaluates this
    way. Values are the same as outside."""
    previous = context.grad_enabled
    context.grad_enabled = False
    try:
        yield
    finally:
        context.grad_enabled = previous
