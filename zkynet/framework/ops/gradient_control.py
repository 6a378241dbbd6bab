"""Gradient controls: op.stop_gradient, a value that the backward pass treats as a constant."""

from zkynet.framework.builder import NodeLike
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Unary

__all__ = ["StopGradient", "stop_gradient"]


class StopGradient(Unary):
    """x itself, with no gradient flowing back into x (a target network's output, the
    shift of a numerically stable softmax, a straight-through estimator's detour)."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    check_integer_overflow = False  # x itself
    vjp_uses_inputs = vjp_uses_out = False
    fuse_call = fuse_vjp = False

    def call(self, x):
        return x.value

    def vjp(self, g, out, x):
        return (None,)


def stop_gradient(x: NodeLike) -> Node:
    return StopGradient()(x)
