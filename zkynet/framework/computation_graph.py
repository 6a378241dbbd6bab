"""zkynet's computational graph, imported as ``cg``.

A Module is a *template*: Variables name its input slots, Parameters hold its
trainable values. Calling it runs ``call()``; every Operator applied there
creates an OperatorNode, so the call leaves a graph grounded in the given
inputs, returned as a ModuleGraph. ``back()`` walks that graph in reverse
topological order and applies each operator's hand-written vector-Jacobian
rule; JAX is only the array library underneath.
"""
import functools
import itertools
import operator
import re
import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework.errors import (BackwardNotRunError, GradientError, InputCountError,
                                     ShapeError, UnknownNameError, ValueTypeError, ZkynetError)
from zkynet.init import key_of

_next_node_id = itertools.count(1).__next__
_next_call_id = itertools.count(1).__next__


def as_value(x, what="value"):
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


# ----------------------------------------------------------------------------- templates

class Template:
    """A named slot of a function: an input Variable, a Parameter or a Constant."""

    def __init__(self, name):
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {type(self).__name__} needs a non-empty string name, got {name!r}")
        self.short_name = name

    @property
    def name(self):
        return self.short_name

    def __repr__(self):
        return f"{type(self).__name__}({self.short_name!r})"


class Variable(Template):
    """An input slot of a Module or Operator; a call fills it with a value or a node.
    An `optional` slot may be left out (or given None): call() then receives None."""

    def __init__(self, name, optional=False):
        super().__init__(name)
        self.optional = optional


class _ValueView:
    """`shape`, `ndim` and `dtype` of whatever holds a `value`."""
    __slots__ = ()

    @property
    def shape(self):
        return self.value.shape

    @property
    def ndim(self):
        return self.value.ndim

    @property
    def dtype(self):
        return self.value.dtype


class _OperatorSyntax(_ValueView):
    """Python operators (`x + w`, `x @ W`, `x[0]`, `-x`, `x.T`) on nodes and parameters."""
    __slots__ = ()
    __array_ufunc__ = None  # NumPy arrays defer to our reflected operators (np_array + node)

    def __add__(self, other): return _op.add(self, other)
    def __radd__(self, other): return _op.add(other, self)
    def __sub__(self, other): return _op.sub(self, other)
    def __rsub__(self, other): return _op.sub(other, self)
    def __mul__(self, other): return _op.mult(self, other)
    def __rmul__(self, other): return _op.mult(other, self)
    def __truediv__(self, other): return _op.div(self, other)
    def __rtruediv__(self, other): return _op.div(other, self)
    def __pow__(self, other): return _op.pow(self, other)
    def __rpow__(self, other): return _op.pow(other, self)
    def __matmul__(self, other): return _op.matmul(self, other)
    def __rmatmul__(self, other): return _op.matmul(other, self)
    def __neg__(self): return _op.neg(self)
    def __getitem__(self, key): return _op.getitem(self, key)

    def __iter__(self):  # without this, Python would iterate via __getitem__ forever
        if not self.shape:
            raise TypeError("cannot iterate over a scalar")
        return (self[i] for i in range(self.shape[0]))

    @property
    def T(self):
        return _op.transpose(self)


class Parameter(_OperatorSyntax, Template):
    """A trainable value owned by a module. In a graph, each parameter is one node,
    however many times the call uses it."""

    def __init__(self, name, value):
        super().__init__(name)
        self.value = value

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value):
        self._value = as_value(value, f"parameter '{self.short_name}'")


class Constant(Template):
    """A named value that takes part in computation but gets no gradient."""

    def __init__(self, name, value):
        super().__init__(name)
        self.value = as_value(value, f"constant '{name}'")


# ----------------------------------------------------------------------------- nodes

class _BuildContext(threading.local):
    """What is being built right now: the top-level call's graph and the module call."""
    builder = None
    scope = None


_context = _BuildContext()


class Node(_OperatorSyntax):
    """A value in a graph, with the nodes it was computed from (`inputs`).

    `ref` is the template it instantiates: the Variable, Parameter or Constant
    of a leaf, or the Operator of an OperatorNode. `scope` is the module call
    that created it (`scope.path` reads like ``composite/m1``).
    """
    __slots__ = ("value", "ref", "inputs", "requires_grad", "scope", "id")

    def __init__(self, value, ref, inputs=(), requires_grad=True):
        self.value = value
        self.ref = ref
        self.inputs = inputs
        self.requires_grad = requires_grad
        self.scope = _context.scope
        self.id = _next_node_id()

    @property
    def name(self):
        return self.ref.short_name if self.ref is not None else "const"

    @property
    def path(self):
        """Where the node was made, e.g. ``composite/m1/mult``."""
        return f"{self.scope.path}/{self.name}" if self.scope is not None else self.name

    @property
    def call_id(self):
        return self.scope.call_id if self.scope is not None else None

    def __repr__(self):
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

    def __init__(self, value, ref=None):
        super().__init__(value, ref, requires_grad=False)


class OperatorNode(Node):
    """The output of applying `ref` (an Operator) to `inputs`."""
    __slots__ = ()

    def __init__(self, op, inputs, value):
        requires_grad = False
        for node in inputs:
            if node.requires_grad:
                requires_grad = True
                break
        super().__init__(value, op, inputs, requires_grad)

    @property
    def name(self):
        return self.ref.functional_name


def as_node(x):
    """The node for anything an operator accepts: a node, a parameter, a constant or a value."""
    if isinstance(x, Node):
        return x
    if isinstance(x, Parameter):
        builder = _context.builder
        return builder.param_node(x) if builder is not None else ParameterNode(x.value, x)
    if isinstance(x, ModuleGraph):
        if isinstance(x.root, tuple):
            raise ValueTypeError(f"this graph has {len(x.root)} outputs; pass one of graph.root")
        return x.root
    if isinstance(x, Constant):
        return ConstantNode(x.value, x)
    if isinstance(x, Variable):
        raise ValueTypeError(f"{x!r} is an input slot, not a value: inside call(), use the "
                             "node call() received for it")
    return ConstantNode(as_value(x))


# ----------------------------------------------------------------------------- functions

@functools.lru_cache(maxsize=None)
def _snake_case(name):
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class Function:
    """Something applied to named inputs: a Module (composes operators) or an Operator
    (a hand-differentiated primitive)."""

    def __init__(self, inputs=(), params=(), name=None):
        self._inputs = self._checked(inputs, Variable, "inputs")
        self._params = self._checked(params, Parameter, "params")
        self._name = name

    def _checked(self, templates, kind, what):
        templates = tuple(templates)
        names = [t.short_name for t in templates if isinstance(t, kind)]
        if len(names) != len(templates):
            raise TypeError(f"{type(self).__name__}: every one of {what} must be a cg.{kind.__name__}, "
                            f"got {templates!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"{type(self).__name__}: {what} names must be unique, got {names}")
        return templates

    @property
    def functional_name(self):
        return self._name or type(self).__name__

    @property
    def inputs(self):
        return self._inputs

    @property
    def params(self):
        return self._params

    def input(self, name):
        """The input Variable called `name`."""
        return self._lookup(self._inputs, name, "input")

    def param(self, name):
        """The Parameter called `name`."""
        return self._lookup(self._params, name, "parameter")

    def _lookup(self, templates, name, kind):
        for template in templates:
            if template.short_name == name:
                return template
        known = ", ".join(t.short_name for t in templates) or "none"
        raise UnknownNameError(f"{self.functional_name} has no {kind} named {name!r}; "
                               f"its {kind}s are: {known}")

    def call(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} must define call()")

    def __repr__(self):
        return f"<{type(self).__name__} {self.functional_name}>"


class Operator(Function):
    """A function whose derivative is written by hand.

    Override `call(self, *inputs)` (inputs are nodes: use `.value`) to return
    the output value, and either
      * `_gradfn(self, inpt)`: for an elementwise operator, a function of the
        same inputs giving d(output)/d(inpt) elementwise, or
      * `vjp(self, g, out, *inputs)`: the vector-Jacobian product, one
        cotangent per input (None for one that gets no gradient), given the
        output's cotangent `g` and its value `out`.
    Cotangents may keep broadcast dimensions; the graph sums them back to
    each input's shape.

    Operators are templates: set attributes, never mutate them in place (the
    compiled computation is keyed on their values).

    Built-in operators set `fuse_call` / `fuse_vjp`: on concrete arrays, their
    `call` / `vjp` then runs as one cached XLA computation (per operator,
    attributes and shapes) instead of one eager dispatch per array operation,
    which keeps eager graphs close to plain jnp speed. Under jit or vmap they run
    as written, inside the caller's trace.
    """
    input_names = ()  # built-in operators name their inputs here instead of in __init__
    variadic = False  # True: takes any number of inputs (concat, stack)
    fuse_call = fuse_vjp = False
    # Whether vjp reads the inputs' values / the output's value (shapes aside): what a
    # loop (op.scan) must keep from its forward pass. True is always safe.
    vjp_uses_inputs = vjp_uses_out = True

    def __init__(self, inputs=None, name=None):
        if inputs is not None:
            super().__init__(inputs=inputs, name=name)
            return
        cls = type(self)  # built-ins are created per call: share one set of input slots per class
        if "_class_inputs" not in cls.__dict__:
            cls._class_inputs = self._checked([Variable(n) for n in cls.input_names], Variable, "inputs")
        self._inputs, self._params, self._name = cls._class_inputs, (), name

    def __setattr__(self, name, value):
        self.__dict__.pop("_fusion_key", None)  # attributes changed: recompute the key
        super().__setattr__(name, value)

    @property
    def functional_name(self):
        return self._name or _snake_case(type(self).__name__)

    def __call__(self, *args):
        if not self.variadic and len(args) != len(self._inputs):
            names = ", ".join(v.short_name for v in self._inputs)
            raise InputCountError(f"{self.functional_name} takes {len(self._inputs)} input(s) "
                                  f"({names}), got {len(args)}")
        nodes = tuple([as_node(a) for a in args])
        try:
            fusion = self._fusion(nodes) if self.fuse_call else None
            value = _fused_call(fusion, *[n.value for n in nodes]) if fusion else self.call(*nodes)
        except ZkynetError:
            raise
        except (TypeError, ValueError) as e:
            raise ShapeError(f"{self._where()}: cannot apply to inputs "
                             f"{' and '.join(_describe(n) for n in nodes)}: {e}") from e
        if isinstance(value, Node):  # composed of other operators: their nodes carry the graph
            return value
        if not isinstance(value, jax.Array):
            value = as_value(value, f"output of {self.functional_name}")
        return OperatorNode(self, nodes, value)

    def pullback(self, g, out, inputs):
        """The input cotangents for output cotangent `g`: `vjp`, fused when possible."""
        fusion = self._fusion(inputs) if self.fuse_vjp and not isinstance(g, jax.core.Tracer) else None
        if fusion:
            needs = tuple([i.requires_grad for i in inputs])
            return _fused_vjp(fusion, needs, g, out, *[i.value for i in inputs])
        return self.vjp(g, out, *inputs)

    def _fusion(self, nodes):
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

    def _where(self):
        scope = _context.scope
        return f"{scope.path}/{self.functional_name}" if scope is not None else self.functional_name

    def vjp(self, g, out, *inputs):
        return tuple(g * self._gradfn(variable)(*inputs) for variable in self._inputs)

    def _gradfn(self, inpt):
        raise NotImplementedError(f"operator {self.functional_name} defines neither _gradfn "
                                  "(elementwise partials) nor vjp (vector-Jacobian product)")


class _FusionKey:
    """An operator as a jit static argument: equal to another when type and public
    attributes are (types included: 1, True and 1.0 differ, so do lists and tuples),
    so `op.sum(x, axis=1)` reuses one compiled computation per shape."""
    __slots__ = ("op", "key", "hash")

    def __init__(self, op, key):
        self.op, self.key, self.hash = op, key, hash(key)

    @classmethod
    def of(cls, op):
        try:
            attributes = tuple((k, _frozen(v)) for k, v in sorted(vars(op).items())
                               if not k.startswith("_"))
            return cls(op, (type(op), attributes))
        except TypeError:  # unhashable attribute, e.g. an array used as an index
            return None

    def __eq__(self, other):
        return self.key == other.key

    def __hash__(self):
        return self.hash


def _frozen(value):
    """A hashable, type-tagged stand-in for an attribute value; TypeError if there is none."""
    if isinstance(value, slice):
        return (slice, _frozen(value.start), _frozen(value.stop), _frozen(value.step))
    if isinstance(value, (list, tuple)):
        return (type(value),) + tuple(_frozen(v) for v in value)
    hash(value)  # TypeError for arrays and other unhashables
    return (type(value), value)


class _Leaf(_ValueView):
    """An input as a fused operator's call/vjp sees it: a traced value, and whether
    it needs a gradient."""
    __slots__ = ("value", "requires_grad")

    def __init__(self, value, requires_grad=False):
        self.value, self.requires_grad = value, requires_grad


@functools.partial(jax.jit, static_argnums=0)
def _fused_call(fusion, *values):
    return fusion.op.call(*[_Leaf(v) for v in values])


@functools.partial(jax.jit, static_argnums=(0, 1))
def _fused_vjp(fusion, needs, g, out, *values):
    return fusion.op.vjp(g, out, *[_Leaf(v, need) for v, need in zip(values, needs)])


def _describe(node):
    return f"{node.dtype}{list(node.shape)}"


class ModuleCall:
    """One call of a module while a graph is built; nodes it creates point to it."""
    __slots__ = ("module", "name", "parent", "call_id", "depth", "_calls_by_name")

    def __init__(self, module, name, parent, call_id):
        self.module = module
        self.name = name
        self.parent = parent
        self.call_id = call_id
        self.depth = parent.depth + 1 if parent is not None else 0
        self._calls_by_name = {}

    @property
    def path(self):
        return f"{self.parent.path}/{self.name}" if self.parent is not None else self.name

    def enter(self, module):
        """The scope of `module` called from this call: named as the caller's attribute,
        with ``#2``, ``#3`` ... for repeated calls (shared weights, time steps)."""
        name = self.module.child_name(module) if isinstance(self.module, Module) else None
        name = name or module.functional_name
        count = self._calls_by_name[name] = self._calls_by_name.get(name, 0) + 1
        return ModuleCall(module, name if count == 1 else f"{name}#{count}", self, self.call_id)

    def __repr__(self):
        return f"<ModuleCall {self.path} (call {self.call_id})>"


class _GraphBuilder:
    """State of one top-level call: its id, one node per used parameter, input bindings."""

    def __init__(self, param_values, rng):
        self.call_id = _next_call_id()
        self.param_values = param_values or {}
        self.param_nodes = {}
        self.bindings = {}  # Variable -> the nodes it was bound to
        self.rng = key_of(rng)
        self.rng_draws = 0

    def param_node(self, param):
        node = self.param_nodes.get(param)
        if node is None:
            node = self.param_nodes[param] = ParameterNode(self.param_values.get(param, param.value),
                                                           param)
        return node

    def bind(self, variable, value, module):
        if isinstance(value, (Node, Parameter, ModuleGraph, Constant)):
            node = as_node(value)
        else:
            node = InputNode(as_value(value, f"input '{variable.short_name}' of "
                                             f"{module.functional_name}"), variable)
        nodes = self.bindings.setdefault(variable, [])
        if node not in nodes:
            nodes.append(node)
        return node


class Module(Function):
    """A model: declare `inputs` and `params`, define `call()` with operators.

    Calling a module builds a graph: at top level it returns a ModuleGraph;
    inside another module's `call()` it extends the caller's graph and returns
    its output node(s). Submodules assigned as attributes (or in lists) are
    registered: they name the module calls in graphs and their parameters are
    part of `named_parameters()`.
    """

    def __init__(self, inputs=(), params=(), name=None):
        super().__init__(inputs=inputs, params=params, name=name)
        self.__dict__.setdefault("_children", {})

    def __setattr__(self, name, value):
        modules = [value] if isinstance(value, Module) else (
            list(value) if isinstance(value, (list, tuple)) else [])
        modules = [m for m in modules if isinstance(m, Module)]
        if modules:
            children = self.__dict__.setdefault("_children", {})
            base = name.lstrip("_") or name
            if isinstance(value, Module):
                children[base] = value
            else:
                children.update((f"{base}.{i}", m) for i, m in enumerate(value) if isinstance(m, Module))
        super().__setattr__(name, value)

    @property
    def children(self):
        """Registered submodules by name."""
        return dict(self.__dict__.get("_children", {}))

    def child_name(self, module):
        for name, child in self.__dict__.get("_children", {}).items():
            if child is module:
                return name
        return None

    def named_parameters(self):
        """Every parameter of this module and its submodules, by path (``m1/w``); a
        shared parameter is listed once, under the first path that reaches it."""
        found, seen = {}, set()

        def visit(module, prefix):
            for p in module.params:
                if id(p) not in seen:
                    seen.add(id(p))
                    found[prefix + p.short_name] = p
            for name, child in module.children.items():
                visit(child, f"{prefix}{name}/")
        visit(self, "")
        return found

    def __call__(self, *args, rng=None, **kwargs):
        """Inputs by position or name; `rng` (PRNG key or seed) switches on randomness
        such as dropout for this call."""
        return call_module(self, args, kwargs, rng=rng)

    def _bind_arguments(self, args, kwargs):
        expected = self._inputs
        names = ", ".join(v.short_name for v in expected) or "no inputs"
        if len(args) > len(expected):
            warnings.warn(f"{self.functional_name} takes {len(expected)} input(s) ({names}) but was "
                          f"called with {len(args)}; ignoring the extra value(s)", stacklevel=4)
            args = args[:len(expected)]
        values = dict(zip(expected, args))
        for key, value in kwargs.items():
            variable = self.input(key)
            if variable in values:
                raise InputCountError(f"{self.functional_name} got input {key!r} twice")
            values[variable] = value
        for v in expected:
            if v.optional:
                values.setdefault(v, None)
        missing = [v.short_name for v in expected if v not in values]
        if missing:
            raise InputCountError(f"{self.functional_name} takes {len(expected)} input(s) ({names}); "
                                  f"missing: {', '.join(missing)}")
        return [values[v] for v in expected]


def call_module(module, args, kwargs=None, param_values=None, rng=None):
    """Call `module`. At top level this builds a new graph and returns its ModuleGraph;
    `param_values` ({Parameter: value}) then stands in for parameters' own values
    (how compiled training feeds traced parameters), and `rng` (a PRNG key or an
    int seed) feeds `rng_key()` (dropout). Nested calls extend the caller's graph
    and return the output node(s)."""
    values = module._bind_arguments(args, kwargs or {})
    builder = _context.builder
    if builder is not None:
        if param_values is not None or rng is not None:
            raise ZkynetError("param_values and rng can only be given to a top-level call")
        return _run(module, values, builder, _context.scope.enter(module))
    builder = _GraphBuilder(param_values, rng)
    scope = ModuleCall(module, module.functional_name, None, builder.call_id)
    return ModuleGraph(module, _run(module, values, builder, scope, as_root=True), builder)


def build_graph(module, args, param_values=None):
    """A new graph of `module` on `args` (a ModuleGraph), independent of any graph being
    built around it: how an operator runs a whole module inside itself (scan)."""
    saved = _context.builder, _context.scope
    _context.builder = _context.scope = None
    try:
        return call_module(module, args, param_values=param_values)
    finally:
        _context.builder, _context.scope = saved


def _flat(outputs):
    """Nested tuples of outputs, flattened: ((a, (b, c)) -> (a, b, c))."""
    for item in outputs:
        if isinstance(item, (tuple, list)):
            yield from _flat(item)
        else:
            yield item


def rng_key():
    """A fresh PRNG key for randomness inside `call()` (dropout), derived from the
    top-level call's `rng`; None when the call got no `rng`, meaning: run
    deterministically (evaluation)."""
    builder = _context.builder
    if builder is None or builder.rng is None:
        return None
    builder.rng_draws += 1
    return jax.random.fold_in(builder.rng, builder.rng_draws)


def _run(module, values, builder, scope, as_root=False):
    saved = _context.builder, _context.scope
    _context.builder, _context.scope = builder, scope
    try:
        nodes = [None if value is None and v.optional else builder.bind(v, value, module)
                 for v, value in zip(module.inputs, values)]
        output = module.call(*nodes)
        if as_root:  # a graph's outputs are nodes of this graph (a returned Parameter included)
            output = (tuple(as_node(o) for o in _flat(output)) if isinstance(output, (tuple, list))
                      else as_node(output))
        return output
    finally:
        _context.builder, _context.scope = saved


# ----------------------------------------------------------------------------- backward

def topological_order(roots):
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


def sum_to_shape(g, shape):
    """Undo broadcasting: sum `g` over the axes broadcasting added or stretched to reach `shape`."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and g.shape[lead + i] != 1)
    return jnp.sum(g, axis=axes).reshape(shape) if axes else g.reshape(shape)


def backprop(order, seeds):
    """Reverse-mode sweep: {node: cotangent} for every node of `order` that the seed
    cotangents ({root: cotangent}) reach through differentiable inputs."""
    grads = dict(seeds)
    get = grads.get
    for node in reversed(order):
        g = get(node)
        if g is None or not node.inputs or not node.requires_grad:
            continue
        cotangents = node.ref.pullback(g, node.value, node.inputs)
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


_ONES = {}


def _one(dtype):
    """A scalar 1 of `dtype`, cached when concrete (arrays are immutable, so sharing is
    safe; a traced one must not outlive its trace)."""
    one = _ONES.get(dtype)
    if one is None:
        one = jnp.ones((), dtype)
        if not isinstance(one, jax.core.Tracer):
            _ONES[dtype] = one
    return one


def jacobian(order, root):
    """{node: d root / d node}, shaped ``root.shape + node.shape``: one backprop per
    output element, batched with `jax.vmap` over the rows of an identity matrix."""
    size = root.value.size
    basis = jnp.eye(size, dtype=root.dtype).reshape((size,) + root.shape)

    def pull(cotangent):
        grads = backprop(order, {root: cotangent})
        return [grads.get(node) for node in order]

    rows = jax.vmap(pull)(basis)
    return {node: row.reshape(root.shape + node.shape)
            for node, row in zip(order, rows) if row is not None}


class ModuleGraph:
    """The graph one top-level module call built: `value`, `root`, `call_id`, and
    gradients once `back()` has run."""

    def __init__(self, module, output, builder):
        self.module = module
        self.call_id = builder.call_id
        self.root = output
        self._builder = builder
        self._order = None
        self._foreign = None
        self._grads = None
        self._jacobian_shape = ()

    @property
    def roots(self):
        return self.root if isinstance(self.root, tuple) else (self.root,)

    @property
    def value(self):
        if isinstance(self.root, tuple):
            return tuple(r.value for r in self.root)
        return self.root.value

    @property
    def nodes(self):
        """Every node the output depends on, inputs before the nodes using them."""
        if self._order is None:
            self._order = topological_order(self.roots)
        return self._order

    def back(self, cotangent=None):
        """Backpropagate from the output. With no cotangent, `grad()` then gives the
        gradient (scalar output) or the full Jacobian (tensor output); with a
        cotangent shaped like the output, the vector-Jacobian product (a tuple
        of them for several outputs, None for an output to leave out)."""
        roots = self.roots
        if cotangent is None:
            if len(roots) != 1:
                raise GradientError(f"this graph has {len(roots)} outputs: back() needs a tuple "
                                    "with one cotangent per output")
            root = roots[0]
            if root.shape == ():
                self._grads, self._jacobian_shape = backprop(self.nodes, {root: _one(root.dtype)}), ()
            else:
                self._grads, self._jacobian_shape = jacobian(self.nodes, root), root.shape
            return
        cotangents = cotangent if isinstance(cotangent, tuple) else (cotangent,)
        if len(cotangents) != len(roots):
            raise GradientError(f"back() got {len(cotangents)} cotangent(s) for {len(roots)} output(s)")
        seeds = {}
        for root, ct in zip(roots, cotangents):
            if ct is None:  # no gradient flows from this output
                continue
            ct = as_value(ct, "cotangent")
            if ct.shape != root.shape:
                raise ShapeError(f"back(): the cotangent must be shaped like the output "
                                 f"{tuple(root.shape)}, got {tuple(ct.shape)}")
            seeds[root] = seeds[root] + ct if root in seeds else ct
        self._grads, self._jacobian_shape = backprop(self.nodes, seeds), ()

    def grad(self, x):
        """d output / d x after `back()`, for a Parameter, an input Variable or a node.

        An input Variable stands for the node it was bound to, so the gradient is
        the total derivative through every use of that node (a nested module's
        input bound to an outer input gives the outer input's gradient). A
        parameter that reaches the output through several graphs (a graph fed to
        another module's call) gets the sum over its nodes."""
        if self._grads is None:
            raise BackwardNotRunError("call back() on this graph before asking for grad()")
        total = None
        for node in self._nodes_of(x):
            g = self._grads.get(node)
            if g is None:  # the output does not depend on it (or only via non-differentiable paths)
                g = jnp.zeros(self._jacobian_shape + node.shape, jnp.result_type(node.dtype, float))
            total = g if total is None else total + g
        return total

    def uses(self, param):
        """Whether this graph used Parameter `param` (else `grad` of it is an error)."""
        return param in self._builder.param_nodes or param in self._foreign_leaves()

    def _nodes_of(self, x):
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
            nodes = self._builder.bindings.get(x) or self._foreign_leaves().get(x)
            if not nodes:
                raise GradientError(f"input {x.short_name!r} was not used by {where}")
            if len(nodes) > 1:
                raise GradientError(f"input {x.short_name!r} was bound to {len(nodes)} different "
                                    f"values in {where}; ask for grad() of the node or outer input "
                                    "you mean")
            return nodes
        raise ValueTypeError(f"grad() takes a Parameter, an input Variable or a node, got "
                             f"{type(x).__name__}")

    def _foreign_leaves(self):
        """{Parameter or Variable: its nodes from other graphs that feed this one (a graph
        given as another module's input)}, computed once."""
        if self._foreign is None:
            self._foreign = {}
            for node in self.nodes:
                if isinstance(node, (ParameterNode, InputNode)) and node.call_id != self.call_id:
                    self._foreign.setdefault(node.ref, []).append(node)
        return self._foreign

    def __repr__(self):
        root = self.root if not isinstance(self.root, tuple) else list(self.root)
        return f"<ModuleGraph of {self.module.functional_name}, call {self.call_id}: {root}>"


from zkynet.framework import operations as _op  # noqa: E402  (the Python operators above use it)
