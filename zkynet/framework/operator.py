"""The Operator base class: a function whose derivative is written by hand, and the
fusion that runs a built-in operator's eager forward or backward as one cached
XLA computation."""

import functools
from collections.abc import Callable, Iterable
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework.builder import NodeLike, as_node
from zkynet.framework.errors import InputCountError, NumericOverflowError, ShapeError, ValueTypeError, ZkynetError
from zkynet.framework.graph import (
    ConstantNode,
    InputNode,
    Node,
    OperatorNode,
    ValueView,
    as_value,
    context,
    jacobian,
    topological_order,
)
from zkynet.framework.templates import Constant, Function, Variable, snake_case

Cotangents = tuple[Any, ...]  # one per input: an array, or None for an input without a gradient


class Operator(Function):
    """A function whose derivative is written by hand.

    Forward: override `call(self, *inputs)` (inputs are nodes: use `.value`) to
    return the output value (or a node, for an operator composed of others).
    An operator whose backward rule needs more from its forward pass than the
    inputs and the output (a loop's activations) overrides `forward` instead.

    Backward: `vjp(self, g, out, *inputs)` is the derivative hook: the
    vector-Jacobian product, one cotangent per input (None for one that gets no
    gradient), given the output's cotangent `g` and its value `out`. Cotangents
    may keep broadcast dimensions; the graph sums them back to each input's shape.
    Elementwise operators may write `_gradfn(self, inpt)` instead (the seed
    document's style): a function of the same inputs giving d(output)/d(inpt)
    elementwise, which the default `vjp` multiplies by `g`.

    Operators are templates: set attributes, never mutate them in place (the
    compiled computation is keyed on their values), and never store what one
    application computed on the operator: that belongs to its node (`forward`).

    Built-in operators set `fuse_call` / `fuse_vjp`: on concrete arrays, their
    `call` / `vjp` then runs as one cached XLA computation (per operator,
    attributes and shapes) instead of one eager dispatch per array operation,
    which keeps eager graphs close to plain jnp speed. Under jit or vmap they run
    as written, inside the caller's trace. Fusion is for operators that save nothing.

    Refusing bad inputs: `check(*inputs)` runs before the forward and raises a
    ZkynetError naming what to fix (built-ins check indices this way). It sees the
    real values: concrete when eager, tracers under jit, where only shapes and
    dtypes are known. An operator whose eager output is an integer array is also
    recomputed in float64 and refused (NumericOverflowError) when the integer result
    overflowed (``m(2000)`` on int32: 2001 * 2000**2 does not fit); set
    `check_integer_overflow = False` for operators meant to wrap (hashing). Under jit
    integers wrap as in JAX: use floats for arithmetic.

    Dtypes of gradients: an integer (or boolean) value differentiated gets a float
    gradient (JAX's default float dtype: back() seeds an integer output with 1.0, and
    no rule casts a cotangent to an integer), so x**3 at the int 3 gives 27.0. Complex
    values differentiate with JAX's convention where the operator says its rule follows
    it (`complex_rule`, below: elementwise arithmetic, exp/log/sqrt/tanh/sigmoid/sin/cos,
    abs, sums, products, matmul, einsum, shapes and indexing); the others refuse them.

    The original zkynet API: `gradfn(inpt)` gives d(output)/d(inpt) as a function of
    the inputs, and `node.grad(child)` evaluates it for one of a node's inputs.
    """

    input_names: tuple[str, ...] = ()  # built-in operators name their inputs here instead of in __init__
    variadic = False  # True: takes any number of inputs (concat, stack)
    fuse_call = fuse_vjp = False
    # Whether vjp reads the inputs' values / the output's value (shapes aside): what a
    # loop (op.scan) must keep from its forward pass. True is always safe.
    vjp_uses_inputs = vjp_uses_out = True
    check_integer_overflow = True  # refuse an eager integer result that overflowed (see above)
    # Whether `vjp` is right for complex inputs under JAX's convention: cotangents are not
    # conjugated (a holomorphic f's rule is g * f'(z), as written for reals), so a real
    # function's gradient is df/dx - i df/dy, what jax.grad gives. Differentiating an
    # operator without it through a complex input raises GradientError naming it.
    complex_rule = False
    _class_inputs: tuple[Variable, ...]

    def __init__(self, inputs: Iterable[Variable] | None = None, name: str | None = None):
        if inputs is not None:
            super().__init__(inputs=inputs, name=name)
            return
        cls = type(self)  # built-ins are created per call: share one set of input slots per class
        if "_class_inputs" not in cls.__dict__:
            cls._class_inputs = self._checked([Variable(n) for n in cls.input_names], Variable, "inputs")
        self._inputs, self._params, self._name = cls._class_inputs, (), name

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__.pop("_fusion_key", None)  # attributes changed: recompute the key
        super().__setattr__(name, value)

    @property
    def functional_name(self) -> str:
        return self._name or snake_case(type(self).__name__)

    def __call__(self, *args: NodeLike) -> Node:
        if not self.variadic and len(args) != len(self._inputs):
            names = ", ".join(v.short_name for v in self._inputs)
            raise InputCountError(
                f"{self.functional_name} takes {len(self._inputs)} input(s) ({names}), got {len(args)}"
            )
        try:
            nodes = tuple([as_node(a) for a in args])
        except (ValueTypeError, NumericOverflowError):
            for i, a in enumerate(args):  # again, to say which input of which operator
                as_node(a, f"{self._where()}: {self._input_label(i)}")
            raise
        self._check_axes()
        try:
            self.check(*nodes)
            fusion = self._fusion(nodes) if self.fuse_call else None
            if fusion:
                value, saved = _fused_call(fusion, *[n.value for n in nodes]), None
            else:
                value, saved = self.forward(*nodes)
        except ZkynetError:
            raise
        except (TypeError, ValueError, IndexError) as e:  # IndexError: JAX's for an axis out of range
            raise ShapeError(
                f"{self._where()}: cannot apply to inputs {' and '.join(_describe(n) for n in nodes)}: {e}"
            ) from e
        if isinstance(value, Node):  # composed of other operators: their nodes carry the graph
            return value
        if not isinstance(value, jax.Array):
            value = as_value(value, f"output of {self.functional_name}")
        if self.check_integer_overflow and value.dtype.kind in "iu" and not isinstance(value, jax.core.Tracer):
            self._refuse_overflow(nodes, value)
        return OperatorNode(self, nodes, value, saved)

    def check(self, *inputs: Any, **kwargs: Any) -> None:
        """Raise a ZkynetError if this operator cannot give a right answer for `inputs`
        (see the class docstring); by default, accept anything."""

    def _check_axes(self) -> None:
        """An `axis`/`axes` setting is None, an int or a sequence of ints: anything else
        (axis="a") would reach JAX as a named axis and fail far from here."""
        for name in ("axis", "axes"):
            axis = getattr(self, name, None)
            parts = axis if isinstance(axis, (tuple, list)) else () if axis is None else (axis,)
            if not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in parts):
                raise ValueTypeError(
                    f"{self._where()}: {name} must be an int, a tuple of ints or None, "
                    f"got {type(axis).__name__} {axis!r}"
                )

    def _input_label(self, i: int) -> str:
        return f"input {self._input_name(i)!r}"

    def _input_name(self, i: int) -> str:
        return self._inputs[i].short_name if i < len(self._inputs) else f"#{i}"

    def _refuse_overflow(self, nodes: tuple[Node, ...], value: jax.Array) -> None:
        """NumericOverflowError if the integer `value` (concrete) differs from the exact
        result, computed by running `call` again in float64 (exact below 2**53)."""
        if type(self).forward is not Operator.forward or any(isinstance(n.value, jax.core.Tracer) for n in nodes):
            return
        with jax.enable_x64(True):
            try:
                exact = self.call(
                    *[
                        _Leaf(jnp.asarray(np.asarray(n.value), jnp.float64) if n.dtype.kind in "iu" else n.value)
                        for n in nodes
                    ]
                )
                exact = np.asarray(exact.value if isinstance(exact, Node) else exact, np.float64)
            except Exception:
                return
        got = np.asarray(value)
        if exact.shape != got.shape:
            return
        info = np.iinfo(value.dtype)
        with np.errstate(invalid="ignore"):
            bad = (
                ~np.isfinite(exact)
                | (exact < info.min)
                | (exact > info.max)
                | ((np.abs(exact) < 2.0**53) & (exact != got))
            )
        if not bad.any():
            return
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        inputs = ", ".join(f"{self._input_name(i)} {_describe(n)}" for i, n in enumerate(nodes))
        where = f" at index {list(at)}" if at else ""
        raise NumericOverflowError(
            f"{self._where()}: integer overflow: the exact result {exact[at]:.17g}{where} "
            f"does not fit {value.dtype} ({info.min}..{info.max}); {value.dtype} arithmetic gave "
            f"{got[at]} instead. The inputs are integers ({inputs}); Python ints become int32 arrays "
            "(JAX's default integer type). To fix: pass floats (e.g. 2000.0 for 2000), or turn on "
            "JAX's 64-bit mode at startup: jax.config.update('jax_enable_x64', True). Under jit "
            "nothing checks: integers wrap, as in JAX."
        )

    def gradfn(self, inpt: Variable | str) -> Callable[..., Node]:
        """The original zkynet API: d(output)/d(`inpt`) as a function of this operator's
        inputs (values or nodes, in order), returning a node (read its `.value`).

        With `_gradfn` defined (an elementwise operator in the seed's style) that is
        its local partial derivative, elementwise. Otherwise it is the full Jacobian,
        shaped output.shape + inpt.shape, computed from this operator's own `vjp`
        (the original computed it with jax.jacrev; for scalars both are the derivative)."""
        name = inpt if isinstance(inpt, str) else inpt.short_name
        variable = self.input(name)
        index = self._inputs.index(variable)
        label = f"d{self.functional_name}/d{name}"

        def partial(*args: NodeLike) -> Node:
            if len(args) != len(self._inputs):
                raise InputCountError(
                    f"{label} takes the {len(self._inputs)} input(s) of {self.functional_name}, got {len(args)}"
                )
            values = [
                a.value
                if isinstance(a, (Node, ValueView))
                else as_value(cast(Any, a), f"{label}: {self._input_label(i)}")
                for i, a in enumerate(args)
            ]
            leaves = [InputNode(v, s) for v, s in zip(values, self._inputs, strict=True)]
            if type(self)._gradfn is not Operator._gradfn:
                result = self._gradfn(variable)(*leaves)
                value = as_value(result.value if isinstance(result, Node) else result, label)
            else:
                out = self(*leaves)
                rows = jacobian(topological_order([out]), out)
                found = rows.get(leaves[index])
                value = (
                    found
                    if found is not None
                    # zero where the output does not depend on it
                    else (jnp.zeros(out.shape + leaves[index].shape, jnp.result_type(out.dtype, float)))
                )
            return ConstantNode(value, Constant(label, value))

        return partial

    def forward(self, *inputs: Any, **kwargs: Any) -> tuple[Any, Any]:
        """(output value, saved): `saved` is kept on the output node (never on the operator)
        and handed to `vjp` as the keyword `saved` when it is not None. By default:
        (call(*inputs), None)."""
        return self.call(*inputs), None

    def vjp(self, g: jax.Array, out: jax.Array, *inputs: Any, **saved: Any) -> Cotangents:
        """The input cotangents for output cotangent `g`, one per input, in order; by
        default each input's elementwise partial (`_gradfn`) times `g`. Operators name
        their inputs (`vjp(self, g, out, a, b)`); one whose `forward` keeps something
        takes it as the keyword `saved`. (The hooks are typed `*inputs: Any, **kwargs:
        Any` so that type checkers accept each operator's own input names.)"""
        return tuple(g * self._gradfn(variable)(*inputs) for variable in self._inputs)

    def _gradfn(self, inpt: Variable) -> Any:
        raise NotImplementedError(
            f"operator {self.functional_name} defines neither _gradfn "
            "(elementwise partials) nor vjp (vector-Jacobian product)"
        )

    def pullback(self, g: jax.Array, node: OperatorNode) -> Cotangents:
        """The input cotangents of `node` (an application of this operator) for its
        output cotangent `g`: `vjp`, fused when possible."""
        if node.saved is not None:
            return self.vjp(g, node.value, *node.inputs, saved=node.saved)
        inputs = node.inputs
        fusion = self._fusion(inputs) if self.fuse_vjp and not isinstance(g, jax.core.Tracer) else None
        if fusion:
            needs = tuple([i.requires_grad for i in inputs])
            return _fused_vjp(fusion, needs, g, node.value, *[i.value for i in inputs])
        return self.vjp(g, node.value, *inputs)

    def _fusion(self, nodes: tuple[Node, ...]) -> "_FusionKey | None":
        """This operator as a jit static argument, or None where it runs unfused:
        unhashable attributes (an array index) or traced inputs."""
        fusion = self.__dict__.get("_fusion_key", False)
        if fusion is False:
            fusion = self.__dict__["_fusion_key"] = _FusionKey.of(self)
        if fusion is not None:
            for node in nodes:
                if isinstance(node.value, jax.core.Tracer):
                    return None
        return fusion

    def _where(self) -> str:
        scope = context.scope
        return f"{scope.path}/{self.functional_name}" if scope is not None else self.functional_name


class _FusionKey:
    """An operator as a jit static argument: equal to another when type and public
    attributes are (types included: 1, True and 1.0 differ, so do lists and tuples),
    so `op.sum(x, axis=1)` reuses one compiled computation per shape."""

    __slots__ = ("op", "key", "hash")

    def __init__(self, op: Operator, key: tuple[Any, ...]):
        self.op, self.key, self.hash = op, key, hash(key)

    @classmethod
    def of(cls, op: Operator) -> "_FusionKey | None":
        try:
            attributes = tuple((k, _frozen(v)) for k, v in sorted(vars(op).items()) if not k.startswith("_"))
            return cls(op, (type(op), attributes))
        except TypeError:  # unhashable attribute, e.g. an array used as an index
            return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _FusionKey) and self.key == other.key

    def __hash__(self) -> int:
        return self.hash


def _frozen(value: Any) -> Any:
    """A hashable, type-tagged stand-in for an attribute value; TypeError if there is none."""
    if isinstance(value, slice):
        return (slice, _frozen(value.start), _frozen(value.stop), _frozen(value.step))
    if isinstance(value, (list, tuple)):
        return (type(value),) + tuple(_frozen(v) for v in value)
    hash(value)  # TypeError for arrays and other unhashables
    return (type(value), value)


class _Leaf(ValueView):
    """An input as a fused operator's call/vjp sees it: a traced value, and whether
    it needs a gradient (all that call and vjp may read of a Node)."""

    __slots__ = ("value", "requires_grad")

    def __init__(self, value: jax.Array, requires_grad: bool = False):
        self.value, self.requires_grad = value, requires_grad


@functools.partial(jax.jit, static_argnums=0)
def _fused_call(fusion: _FusionKey, *values: jax.Array) -> Any:
    return fusion.op.call(*[_Leaf(v) for v in values])


@functools.partial(jax.jit, static_argnums=(0, 1))
def _fused_vjp(
    fusion: _FusionKey, needs: tuple[bool, ...], g: jax.Array, out: jax.Array, *values: jax.Array
) -> Cotangents:
    return fusion.op.vjp(g, out, *cast(list[Node], [_Leaf(v, need) for v, need in zip(values, needs, strict=True)]))


def _describe(node: Node) -> str:
    return f"{node.dtype}{list(node.shape)}"
