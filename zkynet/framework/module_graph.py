"""ModuleGraph: what a top-level module call returns. It holds the graph's output
node(s) and answers `back()` and `grad()` over the graph's nodes."""

from typing import Any

import jax
import jax.numpy as jnp

from zkynet.framework.backward_graph import backprop_graph
from zkynet.framework.errors import BackwardNotRunError, GradientError, ShapeError, ValueTypeError
from zkynet.framework.graph import (
    ArrayLike,
    ConstantNode,
    InputNode,
    Node,
    ParameterNode,
    as_value,
    backprop,
    gradient_dtype,
    jacobian,
    one,
    topological_order,
)
from zkynet.framework.memory import keep_freed_memory_once
from zkynet.framework.templates import Parameter, Template, Variable

Cotangent = ArrayLike | Node  # a node only with create_graph=True


def _float(ct: jax.Array, root: Node) -> jax.Array:
    """A cotangent given as integers, in the gradient dtype of its output (graph.gradient_dtype)."""
    return ct.astype(gradient_dtype(root.dtype)) if ct.dtype.kind in "iub" else ct


class ModuleGraph:
    """The graph one top-level module call built: `value`, `root`, `call_id`, and
    gradients once `back()` has run."""

    def __init__(self, module: Any, output: Node | tuple[Node, ...], builder: Any):
        self.module = module
        self.call_id: int = builder.call_id
        self.root = output
        self._builder = builder  # its param_nodes and bindings say which node stands for which template
        self._order: list[Node] | None = None
        self._foreign: dict[Template, list[Node]] | None = None
        self._grads: dict[Node, Any] | None = None  # arrays, or nodes after back(create_graph=True)
        self._jacobian_shape: tuple[int, ...] = ()
        self._grads_are_nodes = False

    @property
    def roots(self) -> tuple[Node, ...]:
        return self.root if isinstance(self.root, tuple) else (self.root,)

    @property
    def value(self) -> jax.Array | tuple[jax.Array, ...]:
        if isinstance(self.root, tuple):
            return tuple(r.value for r in self.root)
        return self.root.value

    @property
    def state_updates(self) -> dict[Any, jax.Array]:
        """{cg.State: its new value} that the call's cg.update_state set (BatchNorm's running
        statistics in a training call); a plain call has applied them already."""
        return dict(self._builder.state_updates)

    @property
    def nodes(self) -> list[Node]:
        """Every node the output depends on, inputs before the nodes using them."""
        if self._order is None:
            self._order = topological_order(self.roots)
        return self._order

    def back(
        self,
        cotangent: Cotangent | tuple[Cotangent | None, ...] | None = None,
        create_graph: bool = False,
    ) -> None:
        """Backpropagate from the output. With no cotangent, `grad()` then gives the
        gradient (scalar output) or the full Jacobian (tensor output); with a
        cotangent shaped like the output, the vector-Jacobian product (a tuple
        of them for several outputs, None for an output to leave out).

        `create_graph=True` builds the backward pass from zkynet operators (see
        backward_graph.py): `grad()` then gives nodes, to compute with and differentiate
        again (a gradient penalty, a Hessian-vector product), and plot_cg draws them
        apart from the forward pass. It needs a scalar output or a cotangent.
        Each back() replaces the gradients of the one before (nothing accumulates)."""
        keep_freed_memory_once()  # eager training allocates and frees per step: keep that memory (see memory.py)
        if self._builder.no_grad:
            raise GradientError(
                f"this graph of {self.module.functional_name} was built inside cg.no_grad() (or by an "
                "EvalStep), which keeps nothing for a backward pass; call the module outside it to differentiate"
            )
        self._grads_are_nodes = create_graph
        roots = self.roots
        if cotangent is None:
            if len(roots) != 1:
                raise GradientError(
                    f"this graph has {len(roots)} outputs: back() needs a tuple with one cotangent per output"
                )
            root = roots[0]
            if create_graph:
                if root.shape != ():
                    raise GradientError(
                        f"back(create_graph=True) of an output shaped {tuple(root.shape)} needs a cotangent "
                        "shaped like it: the gradient graph is built for one vector-Jacobian product, not a "
                        "full Jacobian (zkynet.hessian and zkynet.jacobian give those)"
                    )
                self._grads, self._jacobian_shape = backprop_graph(self.nodes, {root: one(root.dtype)}), ()
            elif root.shape == ():
                self._grads, self._jacobian_shape = backprop(self.nodes, {root: one(root.dtype)}), ()
            else:
                self._grads, self._jacobian_shape = jacobian(self.nodes, root), root.shape
            return
        cotangents = cotangent if isinstance(cotangent, tuple) else (cotangent,)
        if len(cotangents) != len(roots):
            raise GradientError(f"back() got {len(cotangents)} cotangent(s) for {len(roots)} output(s)")
        seeds: dict[Node, Any] = {}
        for root, ct in zip(roots, cotangents, strict=True):
            if ct is None:  # no gradient flows from this output
                continue
            if create_graph and not isinstance(ct, Node):
                ct = ConstantNode(_float(as_value(ct, "cotangent"), root))
            elif not create_graph:
                ct = _float(as_value(ct, "cotangent"), root)
            if ct.shape != root.shape:
                raise ShapeError(
                    f"back(): the cotangent must be shaped like the output {tuple(root.shape)}, got {tuple(ct.shape)}"
                )
            seeds[root] = seeds[root] + ct if root in seeds else ct
        if create_graph:
            self._grads, self._jacobian_shape = backprop_graph(self.nodes, seeds), ()
        else:
            self._grads, self._jacobian_shape = backprop(self.nodes, seeds), ()

    def grad(self, x: Parameter | Variable | Node) -> Any:
        """d output / d x after `back()`, for a Parameter, an input Variable or a node: an
        array, or a node after `back(create_graph=True)`.

        An input Variable stands for the node it was bound to, so the gradient is
        the total derivative through every use of that node (a nested module's
        input bound to an outer input gives the outer input's gradient). A
        parameter that reaches the output through several graphs (a graph fed to
        another module's call) gets the sum over its nodes."""
        if self._grads is None:
            raise BackwardNotRunError("call back() on this graph before asking for grad()")
        grads, shape = self._grads, self._jacobian_shape
        # zero where the output does not depend on a node (or only via non-differentiable paths)
        total, *others = [
            grads[node] if node in grads else self._zeros(shape + node.shape, jnp.result_type(node.dtype, float))
            for node in self._nodes_of(x)
        ]
        for g in others:
            total = total + g
        return total

    def node(self, x: Parameter | Variable) -> Node:
        """The node that stands for Parameter or input Variable `x` in this graph: what to
        differentiate with respect to when something computed from this graph's gradients
        (after `back(create_graph=True)`) is differentiated again, e.g.
        ``cg.gradients(penalty, [graph.node(w)])``."""
        nodes = self._nodes_of(x)
        if len(nodes) > 1:
            raise GradientError(
                f"{x!r} stands for {len(nodes)} nodes of this graph (it reaches it through several graphs); "
                "pick one of them from graph.nodes"
            )
        return nodes[0]

    def _zeros(self, shape: tuple[int, ...], dtype: Any) -> Any:
        zeros = jnp.zeros(shape, dtype)
        return ConstantNode(zeros) if self._grads_are_nodes else zeros

    def uses(self, param: Parameter) -> bool:
        """Whether this graph used Parameter `param` (else `grad` of it is an error)."""
        return param in self._builder.param_nodes or param in self._foreign_leaves()

    def _nodes_of(self, x: object) -> list[Node]:
        where = f"this graph (call {self.call_id} of {self.module.functional_name})"
        if isinstance(x, Node):
            if x.call_id != self.call_id and x not in set(self.nodes):
                raise GradientError(f"{x!r} is not part of {where}")
            return [x]
        if isinstance(x, Parameter):
            own = self._builder.param_nodes.get(x)
            nodes = ([own] if own is not None else []) + self._foreign_leaves().get(x, [])
            if not nodes:
                raise GradientError(f"parameter {x.short_name!r} was not used by {where}")
            return nodes
        if isinstance(x, Variable):
            nodes = self._builder.bindings.get(x) or self._foreign_leaves().get(x, [])
            if not nodes:
                raise GradientError(f"input {x.short_name!r} was not used by {where}")
            if len(nodes) > 1:
                raise GradientError(
                    f"input {x.short_name!r} was bound to {len(nodes)} different "
                    f"values in {where}; ask for grad() of the node or outer input "
                    "you mean"
                )
            return nodes
        raise ValueTypeError(f"grad() takes a Parameter, an input Variable or a node, got {type(x).__name__}")

    def _foreign_leaves(self) -> dict[Template, list[Node]]:
        """{Parameter or Variable: its nodes from other graphs that feed this one (a graph
        given as another module's input)}, computed once."""
        if self._foreign is None:
            self._foreign = {}
            for node in self.nodes:
                if isinstance(node, (ParameterNode, InputNode)) and node.call_id != self.call_id:
                    self._foreign.setdefault(node.ref, []).append(node)
        return self._foreign

    def __repr__(self) -> str:
        root = self.root if not isinstance(self.root, tuple) else list(self.root)
        return f"<ModuleGraph of {self.module.functional_name}, call {self.call_id}: {root}>"
