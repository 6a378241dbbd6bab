"""zkynet's computational graph, imported as ``cg`` (`from zkynet.framework import cg`).

This module only gathers the public names; each concept lives in its own module:
  graph.py         nodes (Node, InputNode, ParameterNode, ConstantNode, OperatorNode),
                   topological_order, sum_to_shape, backprop, jacobian
  values.py        as_value: numbers, lists and arrays as JAX arrays, never overflowing silently
  cotangents.py    the checks on what a backward rule returns
  backward_graph.py  the backward pass as a graph (derivatives of derivatives):
                   backprop_graph, gradients
  templates.py     Template, Variable, Parameter (trainable or frozen), State, Constant, Function
  module.py        Module (submodules, named_parameters, state_dict), call_module, build_graph
  builder.py       a graph being built: ModuleCall, as_node, rng_key, training, update_state, no_grad
  module_graph.py  ModuleGraph: a top-level call's graph, back(), grad()
  operator.py      Operator: a function with a hand-written derivative
  errors.py        the exceptions
  original.py      the original zkynet API kept working: get_all_nodes, get_input_nodes, op.Multiply
The operators are ``op`` (operations.py, over the ops package).

A Module is a *template*: Variables name its input slots, Parameters hold its
trainable values. Calling it runs ``call()``; every Operator applied there
creates an OperatorNode, so the call leaves a graph grounded in the given
inputs, returned as a ModuleGraph. ``back()`` walks that graph in reverse
topological order and applies each operator's hand-written vector-Jacobian
rule; JAX is only the array library underneath.
"""

from zkynet.framework.backward_graph import backprop_graph, gradients
from zkynet.framework.builder import ModuleCall, NodeLike, as_node, no_grad, rng_key, training, update_state
from zkynet.framework.errors import (
    BackwardNotRunError,
    BackwardRuleError,
    GradientError,
    HigherOrderError,
    IndexOutOfRangeError,
    InputCountError,
    LabelError,
    NameCollisionError,
    NestingDepthError,
    NumericOverflowError,
    PlotError,
    ShapeError,
    StateDictError,
    UnknownNameError,
    UnregisteredParameterError,
    ValueTypeError,
    ZkynetError,
)
from zkynet.framework.graph import (
    ArrayLike,
    ConstantNode,
    InputNode,
    Node,
    OperatorNode,
    ParameterNode,
    as_value,
    backprop,
    jacobian,
    sum_to_shape,
    topological_order,
)
from zkynet.framework.module import Module, build_graph, call_module
from zkynet.framework.module_graph import ModuleGraph
from zkynet.framework.operator import Operator
from zkynet.framework.original import get_all_nodes, get_input_nodes
from zkynet.framework.templates import Constant, Function, Parameter, State, Template, Variable

__all__ = [
    "ArrayLike",
    "NodeLike",
    "as_value",
    "as_node",
    "Template",
    "Variable",
    "Parameter",
    "State",
    "Constant",
    "Node",
    "InputNode",
    "ParameterNode",
    "ConstantNode",
    "OperatorNode",
    "Function",
    "Operator",
    "Module",
    "ModuleCall",
    "ModuleGraph",
    "call_module",
    "build_graph",
    "rng_key",
    "training",
    "update_state",
    "no_grad",
    "topological_order",
    "sum_to_shape",
    "backprop",
    "backprop_graph",
    "gradients",
    "jacobian",
    "get_all_nodes",
    "get_input_nodes",
    "ZkynetError",
    "InputCountError",
    "UnknownNameError",
    "ValueTypeError",
    "ShapeError",
    "GradientError",
    "HigherOrderError",
    "BackwardNotRunError",
    "UnregisteredParameterError",
    "NameCollisionError",
    "StateDictError",
    "IndexOutOfRangeError",
    "LabelError",
    "BackwardRuleError",
    "NumericOverflowError",
    "NestingDepthError",
    "PlotError",
]
