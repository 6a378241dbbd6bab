"""The base classes of the built-in operators: fused, and named by arity."""

from zkynet.framework.operator import Operator


class Fused(Operator):
    """A built-in operator: eager calls run fused (see Operator), except a vjp
    that is no more than one array operation."""

    fuse_call = fuse_vjp = True


class Binary(Fused):
    input_names = ("a", "b")


class Unary(Fused):
    input_names = ("x",)
