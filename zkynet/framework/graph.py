"""The graph itself: nodes, and the reverse sweep that differentiates them.

A Node holds a value and the nodes it was computed from. `backprop` walks a
graph's nodes in reverse topological order and asks each OperatorNode's
operator for its vector-Jacobian product. Nothing here knows about modules:
templates (templates.py) and module calls (builder.py) sit on top of this.

Two concepts it uses live beside it, and their names are importable from here too:
what users pass becoming a node's value (`as_value`, values.py), and the checks on
what a backward rule returns (cotangents.py).
"""

import itertools
import operator
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework.cotangents import (
    check_cotangent_dtype,
    check_cotangents,
    complex_cotangent,
    reducible_shape,
    rule_failed,
)
from zkynet.framework.errors import GradientError, ZkynetError
from zkynet.framework.slice_cotangent import SliceCotangent, dense
from zkynet.framework.slice_cotangent import add as add_cotangents

# what users pass as values, made arrays: values.py (imported from here too, as before)
from zkynet.framework.values import ArrayLike as ArrayLike
from zkynet.framework.values import as_value as as_value

_next_node_id = itertools.count(1).__next__


class ValueView:
    """`shape`, `ndim` and `dtype` of whatever holds a `value`."""

    __slots__ = ()
    value: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    @property
    def ndim(self) -> int:
        return self.value.ndim

    @property
    def dtype(self) -> Any:
        return self.value.dtype


# The operators behind Python's syntax on nodes (`x + w` is op.add) and behind xp's
# functions on nodes (xp.exp is op.exp). They live in the ops package, which needs the
# node classes below, so this module cannot import them: the ops package hands them
# over once, with `register_operators`, when it is imported. Importing anything under
# zkynet.framework runs the package's __init__, which imports the ops, so they are in
# place before any node exists.
operators = types.SimpleNamespace()


def register_operators(**functions: Callable[..., "Node"]) -> None:
    """Set the operator functions that node syntax and xp call on nodes (see `operators`)."""
    vars(operators).update(functions)


class OperatorSyntax(ValueView):
    """Python operators (`x + w`, `x @ W`, `x[0]`, `-x`, `x.T`) on nodes and parameters."""

    __slots__ = ()
    __array_ufunc__ = None  # NumPy arrays defer to our reflected operators (np_array + node)

    def __add__(self, other: Any) -> "Node":
        return operators.add(self, other)

    def __radd__(self, other: Any) -> "Node":
        return operators.add(other, self)

    def __sub__(self, other: Any) -> "Node":
        return operators.sub(self, other)

    def __rsub__(self, other: Any) -> "Node":
        return operators.sub(other, self)

    def __mul__(self, other: Any) -> "Node":
        return operators.mult(self, other)

    def __rmul__(self, other: Any) -> "Node":
        return operators.mult(other, self)

    def __truediv__(self, other: Any) -> "Node":
        return operators.div(self, other)

    def __rtruediv__(self, other: Any) -> "Node":
        return operators.div(other, self)

    def __pow__(self, other: Any) -> "Node":
        return operators.pow(self, other)

    def __rpow__(self, other: Any) -> "Node":
        return operators.pow(other, self)

    def __matmul__(self, other: Any) -> "Node":
        return operators.matmul(self, other)

    def __rmatmul__(self, other: Any) -> "Node":
        return operators.matmul(other, self)

    def __neg__(self) -> "Node":
        return operators.neg(self)

    def __getitem__(self, key: Any) -> "Node":
        return operators.getitem(self, key)

    def __lt__(self, other: Any) -> "Node":
        return operators.less(self, other)

    def __le__(self, other: Any) -> "Node":
        return operators.less_equal(self, other)

    def __gt__(self, other: Any) -> "Node":
        return operators.greater(self, other)

    def __ge__(self, other: Any) -> "Node":
        return operators.greater_equal(self, other)

    def astype(self, dtype: Any) -> "Node":
        return operators.astype(self, dtype)

    def reshape(self, *shape: Any) -> "Node":
        return operators.reshape(self, shape[0] if len(shape) == 1 else shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __iter__(self) -> Iterator["Node"]:  # without this, Python would iterate via __getitem__ forever
        if not self.shape:
            raise TypeError("cannot iterate over a scalar")
        return (self[i] for i in range(self.shape[0]))

    @property
    def T(self) -> "Node":
        return operators.transpose(self)


class _BuildContext(threading.local):
    """What is being built right now: the top-level call's graph builder and the module
    call running (a builder.ModuleCall). builder.py sets both; nodes record the scope.
    `grad_enabled` is False inside cg.no_grad(): nodes then keep no inputs and nothing
    for a backward pass (builder.no_grad)."""

    builder: Any = None
    scope: Any = None
    grad_enabled: bool = True


context = _BuildContext()


class Node(OperatorSyntax):
    """A value in a graph, with the nodes it was computed from (`inputs`).

    `ref` is the template it instantiates: the Variable, Parameter or Constant
    of a leaf, or the Operator of an OperatorNode. `scope` is the module call
    that created it (`scope.path` reads like ``composite/m1``).
    """

    __slots__ = ("value", "ref", "inputs", "requires_grad", "scope", "id")
    ref: Any
    inputs: tuple["Node", ...]

    def __init__(self, value: jax.Array, ref: Any, inputs: tuple["Node", ...] = (), requires_grad: bool = True):
        self.value = value
        self.ref = ref
        if context.grad_enabled:
            self.inputs = inputs
            self.requires_grad = requires_grad
        else:  # cg.no_grad(): nothing to differentiate, and earlier values may be freed
            self.inputs = ()
            self.requires_grad = False
        self.scope = context.scope
        self.id = _next_node_id()

    @property
    def name(self) -> str:
        return self.ref.short_name if self.ref is not None else "const"

    @property
    def path(self) -> str:
        """Where the node was made, e.g. ``composite/m1/mult``."""
        return f"{self.scope.path}/{self.name}" if self.scope is not None else self.name

    @property
    def call_id(self) -> int | None:
        return self.scope.call_id if self.scope is not None else None

    @property
    def children(self) -> tuple["Node", ...]:
        """The original zkynet API's name for `inputs` (it drew edges child -> parent)."""
        return self.inputs

    def __eq__(self, other: object) -> bool:
        """Nodes are equal when they are the same node of the same graph call: the same
        call id, the same template (`ref`) applied at the same place (the creation
        number `id`, which a copy keeps) and equal values (the original zkynet's rule;
        it gave every operator application a template of its own). So nodes of two
        calls always differ, even with equal values, and distinct nodes of one graph
        never merge in a dict or set. Traced values compare by identity."""
        if self is other:
            return True
        if not isinstance(other, Node) or type(self) is not type(other):
            return False
        return (
            self.id == other.id
            and self.call_id == other.call_id
            and self.ref is other.ref
            and _same_value(self.value, other.value)
        )

    def __hash__(self) -> int:
        return self.id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} {self.dtype}{list(self.shape)} #{self.id}>"


def _same_value(a: jax.Array, b: jax.Array) -> bool:
    if a is b:
        return True
    if isinstance(a, jax.core.Tracer) or isinstance(b, jax.core.Tracer):
        return False
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


class InputNode(Node):
    """The value given for an input Variable in one call."""

    __slots__ = ()


class ParameterNode(Node):
    """A Parameter's value in one graph."""

    __slots__ = ()


class ConstantNode(Node):
    """A value that gets no gradient: a Constant, or a raw number an operator was given."""

    __slots__ = ()

    def __init__(self, value: jax.Array, ref: Any = None):
        super().__init__(value, ref, requires_grad=False)


class OperatorNode(Node):
    """The output of applying `ref` (an Operator) to `inputs`. `saved` is what the
    operator's forward kept for its backward rule (see Operator.forward): it lives on
    the node, one per application, because operators are shared, immutable templates."""

    __slots__ = ("saved",)

    def __init__(self, op: Any, inputs: tuple[Node, ...], value: jax.Array, saved: Any = None):
        requires_grad = False
        for node in inputs:
            if node.requires_grad:
                requires_grad = True
                break
        super().__init__(value, op, inputs, requires_grad)
        self.saved = saved if context.grad_enabled else None

    @property
    def name(self) -> str:
        return self.ref.functional_name

    def grad(self, child: Node) -> jax.Array:
        """The original zkynet API: d(this node)/d(`child`), the local derivative of its
        operator for one of its inputs, at the inputs' values (Operator.gradfn; for an
        input in two slots, as in x * x, the first slot's)."""
        slots = getattr(self.ref, "inputs", ())
        for i, node in enumerate(self.inputs):
            if node is child and i < len(slots):
                return self.ref.gradfn(slots[i])(*self.inputs).value
        raise GradientError(f"{child!r} is not a named input of {self!r}; its inputs are {list(self.inputs)}")


def topological_order(roots: Iterable[Node]) -> list[Node]:
    """Nodes reachable from `roots`, each after all of its inputs. Nodes are numbered
    as they are created, always after their inputs, so sorting by that number is a
    topological order (no recursion, so graphs of any depth work)."""
    seen = set(roots)
    stack = list(seen)
    while stack:
        for node in stack.pop().inputs:
            if node not in seen:
                seen.add(node)
                stack.append(node)
    return sorted(seen, key=_creation_order)


_creation_order = operator.attrgetter("id")


def sum_to_shape(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Undo broadcasting: sum `g` over the axes broadcasting added or stretched to reach `shape`."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    return jnp.sum(g, axis=axes).reshape(shape) if axes else g.reshape(shape)


def backprop(order: Sequence[Node], seeds: Mapping[Node, jax.Array]) -> dict[Node, jax.Array]:
    """Reverse-mode sweep: {node: cotangent} for every node of `order` that the seed
    cotangents ({root: cotangent}) reach through differentiable inputs. Each operator's
    vjp must return one cotangent per input (None for no gradient), each shaped like
    its input or broadcastable to it (or a SliceCotangent, kept in blocks while only
    slices' rules add to it); anything else raises BackwardRuleError."""
    grads: dict[Node, Any] = dict(seeds)  # arrays, and SliceCotangents until the end
    get = grads.get
    sliced = []  # nodes given a SliceCotangent: made arrays at the end if no rule read them
    for node in reversed(order):
        g = get(node)
        if g is None or not node.inputs or not node.requires_grad:
            continue
        if type(g) is SliceCotangent:
            g = grads[node] = g.dense()
        inputs = node.inputs
        try:
            cotangents = node.ref.pullback(g, node)
        except (TypeError, ValueError) as e:
            if isinstance(e, ZkynetError):
                raise
            raise rule_failed(node, g, e) from e
        if type(cotangents) is not tuple or len(cotangents) != len(inputs):
            cotangents = check_cotangents(node, cotangents)
        for i, ct in enumerate(cotangents):
            inp = inputs[i]
            if ct is None or not inp.requires_grad:
                continue
            if type(ct) is SliceCotangent:
                sliced.append(inp)
            else:
                if not isinstance(ct, jax.Array):
                    ct = jnp.asarray(ct)
                if ct.dtype.kind in "biu":
                    check_cotangent_dtype(node, i, ct.dtype)
            if inp.value.dtype.kind == "c" or ct.dtype.kind == "c":
                ct = complex_cotangent(node, i, ct, jnp.real)
            if ct.shape != inp.value.shape:
                ct = sum_to_shape(ct, reducible_shape(node, i, ct.shape))
            previous = get(inp)
            grads[inp] = ct if previous is None else add_cotangents(previous, ct)
    for node in sliced:
        grads[node] = dense(grads[node])
    return grads


_ONES: dict[Any, jax.Array] = {}


def gradient_dtype(dtype: Any) -> Any:
    """The dtype of a gradient of a value of `dtype`: itself for floats and complex numbers,
    JAX's default float for integers and booleans (Operator's docstring)."""
    dtype = jnp.dtype(dtype)
    return dtype if dtype.kind in "fcV" else jnp.result_type(float)


def one(dtype: Any) -> jax.Array:
    """A scalar 1 in the gradient dtype of `dtype` (the seed of a scalar output's backprop),
    cached when concrete (arrays are immutable, so sharing is safe; a traced one must not
    outlive its trace)."""
    dtype = gradient_dtype(dtype)
    value = _ONES.get(dtype)
    if value is None:
        value = jnp.ones((), dtype)
        if not isinstance(value, jax.core.Tracer):
            _ONES[dtype] = value
    return value


def jacobian(order: Sequence[Node], root: Node) -> dict[Node, jax.Array]:
    """{node: d root / d node}, shaped ``root.shape + node.shape``: one backprop per
    output element, batched with `jax.vmap` over the rows of an identity matrix."""
    size = root.value.size
    basis = jnp.eye(size, dtype=gradient_dtype(root.dtype)).reshape((size,) + root.shape)

    def pull(cotangent: jax.Array) -> list[jax.Array | None]:
        grads = backprop(order, {root: cotangent})
        return [grads.get(node) for node in order]

    rows = jax.vmap(pull)(basis)
    return {
        node: row.reshape(root.shape + node.shape) for node, row in zip(order, rows, strict=True) if row is not None
    }
