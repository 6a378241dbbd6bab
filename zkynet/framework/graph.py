"""The graph itself: nodes, and the reverse sweep that differentiates them.

A Node holds a value and the nodes it was computed from. `backprop` walks a
graph's nodes in reverse topological order and asks each OperatorNode's
operator for its vector-Jacobian product. Nothing here knows about modules:
templates (templates.py) and module calls (builder.py) sit on top of this.
"""
import itertools
import operator
import threading
import types
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework.errors import ValueTypeError

ArrayLike = Union[jax.typing.ArrayLike, Sequence[Any]]  # what as_value accepts: nested lists too

_next_node_id = itertools.count(1).__next__


def as_value(x: ArrayLike, what: str = "value") -> jax.Array:
    """`x` as a JAX array; accepts numbers, NumPy arrays, nested lists and JAX arrays/tracers."""
    if isinstance(x, jax.Array):
        return x
    if isinstance(x, (bool, int, float, complex)):
        return jnp.asarray(x)  # stays weakly typed, like a Python number in jnp
    if isinstance(x, (np.ndarray, np.generic, list, tuple)):
        try:
            array = np.asarray(x)
        except ValueError as e:  # ragged nested lists
            raise ValueTypeError(f"{what}: cannot make an array of {x!r:.80}: {e}") from e
        if array.dtype.kind in "biufc":
            return jnp.asarray(array)
    raise ValueTypeError(f"{what}: expected a number or a numeric array, "
                         f"got {type(x).__name__} {x!r:.80}")


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


# The operators behind Python's syntax on nodes (`x + w` is op.add). They live in the
# ops package, which needs the node classes below, so this module cannot import them:
# the ops package hands them over once, with `define_syntax`, when it is imported.
# Importing anything under zkynet.framework runs the package's __init__, which imports
# the ops, so they are in place before any node exists.
_syntax = types.SimpleNamespace()


def define_syntax(**operators: Callable[..., "Node"]) -> None:
    """Set the functions Python's operators call on nodes and parameters (see _syntax)."""
    vars(_syntax).update(operators)


class OperatorSyntax(ValueView):
    """Python operators (`x + w`, `x @ W`, `x[0]`, `-x`, `x.T`) on nodes and parameters."""
    __slots__ = ()
    __array_ufunc__ = None  # NumPy arrays defer to our reflected operators (np_array + node)

    def __add__(self, other: Any) -> "Node": return _syntax.add(self, other)
    def __radd__(self, other: Any) -> "Node": return _syntax.add(other, self)
    def __sub__(self, other: Any) -> "Node": return _syntax.sub(self, other)
    def __rsub__(self, other: Any) -> "Node": return _syntax.sub(other, self)
    def __mul__(self, other: Any) -> "Node": return _syntax.mult(self, other)
    def __rmul__(self, other: Any) -> "Node": return _syntax.mult(other, self)
    def __truediv__(self, other: Any) -> "Node": return _syntax.div(self, other)
    def __rtruediv__(self, other: Any) -> "Node": return _syntax.div(other, self)
    def __pow__(self, other: Any) -> "Node": return _syntax.pow(self, other)
    def __rpow__(self, other: Any) -> "Node": return _syntax.pow(other, self)
    def __matmul__(self, other: Any) -> "Node": return _syntax.matmul(self, other)
    def __rmatmul__(self, other: Any) -> "Node": return _syntax.matmul(other, self)
    def __neg__(self) -> "Node": return _syntax.neg(self)
    def __getitem__(self, key: Any) -> "Node": return _syntax.getitem(self, key)

    def __iter__(self) -> Iterator["Node"]:  # without this, Python would iterate via __getitem__ forever
        if not self.shape:
            raise TypeError("cannot iterate over a scalar")
        return (self[i] for i in range(self.shape[0]))

    @property
    def T(self) -> "Node":
        return _syntax.transpose(self)


class _BuildContext(threading.local):
    """What is being built right now: the top-level call's graph builder and the module
    call running (a builder.ModuleCall). builder.py sets both; nodes record the scope."""
    builder: Any = None
    scope: Any = None


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

    def __init__(self, value: jax.Array, ref: Any, inputs: tuple["Node", ...] = (),
                 requires_grad: bool = True):
        self.value = value
        self.ref = ref
        self.inputs = inputs
        self.requires_grad = requires_grad
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

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} {self.dtype}{list(self.shape)} #{self.id}>"


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
        self.saved = saved

    @property
    def name(self) -> str:
        return self.ref.functional_name


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
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and g.shape[lead + i] != 1)
    return jnp.sum(g, axis=axes).reshape(shape) if axes else g.reshape(shape)


def backprop(order: Sequence[Node], seeds: Mapping[Node, jax.Array]) -> dict[Node, jax.Array]:
    """Reverse-mode sweep: {node: cotangent} for every node of `order` that the seed
    cotangents ({root: cotangent}) reach through differentiable inputs."""
    grads = dict(seeds)
    get = grads.get
    for node in reversed(order):
        g = get(node)
        if g is None or not node.inputs or not node.requires_grad:
            continue
        cotangents = node.ref.pullback(g, node)
        for inp, ct in zip(node.inputs, cotangents):
            if ct is None or not inp.requires_grad:
                continue
            if not isinstance(ct, jax.Array):
                ct = jnp.asarray(ct)
            if ct.shape != inp.value.shape:
                ct = sum_to_shape(ct, inp.value.shape)
            previous = get(inp)
            grads[inp] = ct if previous is None else previous + ct
    return grads


_ONES: dict[Any, jax.Array] = {}


def one(dtype: Any) -> jax.Array:
    """A scalar 1 of `dtype` (the seed of a scalar output's backprop), cached when
    concrete (arrays are immutable, so sharing is safe; a traced one must not outlive
    its trace)."""
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
    basis = jnp.eye(size, dtype=root.dtype).reshape((size,) + root.shape)

    def pull(cotangent: jax.Array) -> list[jax.Array | None]:
        grads = backprop(order, {root: cotangent})
        return [grads.get(node) for node in order]

    rows = jax.vmap(pull)(basis)
    return {node: row.reshape(root.shape + node.shape)
            for node, row in zip(order, rows) if row is not None}
