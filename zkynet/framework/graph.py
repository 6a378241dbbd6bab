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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework.errors import BackwardRuleError, GradientError, NumericOverflowError, ValueTypeError
from zkynet.framework.slice_cotangent import SliceCotangent, dense
from zkynet.framework.slice_cotangent import add as add_cotangents

ArrayLike = jax.typing.ArrayLike | Sequence[Any]  # what as_value accepts: nested lists too

_next_node_id = itertools.count(1).__next__


def as_value(x: ArrayLike, what: str = "value") -> jax.Array:
    """`x` as a JAX array; accepts numbers, NumPy arrays, nested lists and JAX arrays/tracers.

    Python numbers stay weakly typed, as in jnp. A value that would not survive the
    conversion is refused (NumericOverflowError), never wrapped or turned into inf:
    without 64-bit mode JAX makes ints int32 and floats float32, so a Python int or
    int64 array beyond int32's range, or a finite float beyond float32's, does not fit.
    (Computations on fitting integers can still overflow: operators refuse that when
    their inputs are concrete, see Operator.)"""
    if isinstance(x, jax.Array):
        return x
    if isinstance(x, (bool, int, float, complex)):
        if not -_SAFE < abs(x) < _SAFE:  # beyond what every dtype holds: check exactly (else fast)
            if isinstance(x, int) and not isinstance(x, bool):
                _check_int_range(x, x, jax.dtypes.canonicalize_dtype(np.int64), what)
            elif np.isfinite(x):
                target = jax.dtypes.canonicalize_dtype(np.float64 if isinstance(x, float) else np.complex128)
                with np.errstate(over="ignore"):
                    if not np.isfinite(np.asarray(x, target)):
                        _refuse_float(x, target, what)
        return jnp.asarray(x)  # stays weakly typed, like a Python number in jnp
    if isinstance(x, (np.ndarray, np.generic, list, tuple)):
        try:
            array = np.asarray(x)
        except ValueError as e:  # ragged nested lists
            raise ValueTypeError(f"{what}: cannot make an array of {x!r:.80}: {e}") from e
        if array.dtype.kind in "biufc":
            return jnp.asarray(_fitting(array, what))
        if jnp.issubdtype(array.dtype, jnp.floating):  # bfloat16 and the other ml_dtypes floats (kind "V")
            return jnp.asarray(array)
        if (
            array.dtype == object
            and array.size
            and all(isinstance(v, int) and not isinstance(v, bool) for v in array.flat)
        ):
            big = max(array.flat, key=abs)  # NumPy found no integer type for them
            _check_int_range(big, big, jax.dtypes.canonicalize_dtype(np.int64), what)
    raise ValueTypeError(f"{what}: expected a number or a numeric array, got {type(x).__name__} {x!r:.80}")


_SAFE = 2**31 - 1  # a Python number smaller than this in magnitude fits int32 and float32

_X64_ADVICE = (
    "pass floats instead (e.g. 2.0**40, or np.asarray(x, np.float32)), or turn on JAX's "
    "64-bit mode at startup: jax.config.update('jax_enable_x64', True)"
)


def _check_int_range(low: int, high: int, dtype: Any, what: str) -> None:
    info = np.iinfo(dtype)
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise NumericOverflowError(
            f"{what}: the integer {bad} does not fit {np.dtype(dtype).name} ({info.min}..{info.max}), the "
            f"integer type JAX gives it here; it would wrap around silently. To fix: {_X64_ADVICE}"
        )


def _refuse_float(value: Any, dtype: Any, what: str) -> None:
    value = complex(value) if np.iscomplexobj(value) else float(value)
    raise NumericOverflowError(
        f"{what}: {value!r:.40} is beyond {np.dtype(dtype).name}'s largest value "
        f"({np.finfo(dtype).max:.4g}), the float type JAX gives it here; it would become inf. "
        f"To fix: rescale it, or {_X64_ADVICE.split(', or ')[-1]}"
    )


def _fitting(array: np.ndarray, what: str) -> np.ndarray:
    """`array`, once sure that JAX's conversion to its canonical dtype (int64 -> int32,
    float64 -> float32 without 64-bit mode) loses no value to wrap-around or inf."""
    target = jax.dtypes.canonicalize_dtype(array.dtype)
    if target == array.dtype or not array.size:
        return array
    if array.dtype.kind in "iu":
        _check_int_range(int(array.min()), int(array.max()), target, what)
    elif array.dtype.kind in "fc":
        with np.errstate(over="ignore"):
            lost = np.isfinite(array) & ~np.isfinite(array.astype(target))
        if lost.any():
            _refuse_float(array[lost].flat[0], target, what)
    return array


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
        cotangents = node.ref.pullback(g, node)
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


def complex_cotangent(node: Node, i: int, ct: Any, real: Callable[[Any], Any]) -> Any:
    """`ct` for input `i` of `node` when either is complex: refused unless the operator's
    rule follows JAX's convention (Operator.complex_rule); for a real input, its real part."""
    inp = node.inputs[i]
    if inp.value.dtype.kind == "c" and not getattr(node.ref, "complex_rule", False):
        raise GradientError(
            f"{_rule(node)} has no rule for complex values ({_input_name(node, i)} is {inp.value.dtype}): "
            "zkynet differentiates complex numbers with JAX's convention (jax.grad's df/dx - i df/dy) "
            "only through operators whose rules follow it (elementwise arithmetic, exp, log, sqrt, tanh, "
            "sigmoid, sin, cos, abs, conj, real, sums and products, matmul, einsum, shapes and indexing). "
            "Split it into real and imaginary parts (op.real, op.real(x * -1j)) before this operator"
        )
    if inp.value.dtype.kind != "c":
        ct = dense(ct) if type(ct) is SliceCotangent else ct
        return real(ct)
    return ct


def _input_name(node: Node, i: int) -> str:
    names = [v.short_name for v in getattr(node.ref, "inputs", ())]
    return f"input {names[i]!r}" if i < len(names) else f"input #{i}"


def _rule(node: Node) -> str:
    return f"{node.path}: {type(node.ref).__name__}.vjp"


def check_cotangents(node: Node, cotangents: Any) -> tuple[Any, ...]:
    """`cotangents` as a tuple with one entry per input of `node`, or a BackwardRuleError."""
    count = len(node.inputs)
    if not isinstance(cotangents, (tuple, list)):
        raise BackwardRuleError(
            f"{_rule(node)} returned {type(cotangents).__name__}, not a tuple of cotangents: return "
            f"one per input ({count}), e.g. `return (g * 2,)` for a one-input operator, None for an "
            "input that gets no gradient"
        )
    if len(cotangents) != count:
        names = ", ".join(_input_name(node, i).split(" ", 1)[1].strip("'") for i in range(count))
        raise BackwardRuleError(
            f"{_rule(node)} returned {len(cotangents)} cotangent(s) for {count} input(s) ({names}): "
            "return exactly one per input, in the order of the inputs, None for one that gets no gradient"
        )
    return tuple(cotangents)


def reducible_shape(node: Node, i: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of input `i` of `node`, once sure a cotangent shaped `shape` can be summed
    back to it: the axes summed away (extra leading ones, n where the input has 1) must be
    ones that broadcasting the input to the output made (they are axes of the output, of
    the same size); else BackwardRuleError."""
    target = node.inputs[i].value.shape
    out = node.value.shape
    lead = len(shape) - len(target)
    summed = [] if lead < 0 else [*range(lead), *(lead + a for a, t in enumerate(target) if t == 1)]
    if (
        lead < 0
        or any(t != s and t != 1 for t, s in zip(target, shape[lead:], strict=True))
        or any(
            shape[a] != 1 and (a - len(shape) + len(out) < 0 or out[a - len(shape) + len(out)] != shape[a])
            for a in summed
        )
    ):
        raise BackwardRuleError(
            f"{_rule(node)} returned a cotangent shaped {tuple(shape)} for {_input_name(node, i)}, "
            f"which is shaped {tuple(target)} (the output {tuple(out)}): a cotangent must have its input's "
            "shape, or the shape broadcasting gave the input in this operator (extra leading axes or n "
            "where the input has 1, each an axis of the output), which back() sums away"
        )
    return target


def check_cotangent_dtype(node: Node, i: int, dtype: Any) -> None:
    """BackwardRuleError for an integer or boolean cotangent of a floating input (summing it
    into the gradient would truncate it: 2.5 becomes 2)."""
    inp = node.inputs[i]
    if inp.dtype.kind not in "biu":
        raise BackwardRuleError(
            f"{_rule(node)} returned a cotangent of dtype {np.dtype(dtype).name} for {_input_name(node, i)}, which is "
            f"{inp.dtype}: a cotangent is a floating value (an integer one truncates the gradient); "
            "compute it in the input's dtype, e.g. g * 2.0 or .astype(x.dtype)"
        )


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
