"""Modules: functions composed of operators, holding parameters and submodules.

Calling a module runs its `call()` inside a graph builder (builder.py): at top
level the call returns a ModuleGraph, nested inside another module's `call()` it
extends that graph. Submodules are found in the module's attributes whenever they
are needed, so every parameter a call uses is one the module can name, save and
load, or the call says so.
"""

import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from zkynet.framework.builder import GraphBuilder, ModuleCall, run
from zkynet.framework.errors import InputCountError, NameCollisionError, NestingDepthError, StateDictError, ZkynetError
from zkynet.framework.graph import ArrayLike, as_value, context
from zkynet.framework.module_graph import ModuleGraph
from zkynet.framework.templates import Function, Parameter, State


class Module(Function):
    """A model: declare `inputs` and `params`, define `call()` with operators.

    Calling a module builds a graph: at top level it returns a ModuleGraph;
    inside another module's `call()` it extends the caller's graph and returns
    its output node(s).

    Submodules are found wherever they sit in the attributes: directly, in lists
    and tuples (nested too) and in dicts, looked up when asked (a list appended to
    after assignment counts). Their names give the module calls in graphs
    (``node.path``) and the keys of `named_parameters()` / `state_dict()`:
      * an attribute names its module(s) without a leading underscore
        (``self._m1`` -> ``m1``); two attributes that collide so are an error;
      * a dict value is named by its key (``heads.a``);
      * a list or tuple element by its index among the elements that own
        parameters (``layers.0``, ``layers.1``, ...), so parameterless layers
        (activations, dropout) do not shift the names of the layers after them.
        They get no name of their own: in graphs they appear under their
        functional name, with ``#2``, ``#3`` ... when repeated.
    A module kept anywhere else (a set, another object) is not found, and a call
    that uses its parameters raises UnregisteredParameterError.

    Parameters are found the same way: those declared in `params=(...)`, and any
    cg.Parameter (or cg.State) held by an attribute, directly or in lists, tuples
    and dicts (``self.W = cg.Parameter("W", w0)``). Each goes by its own name
    (`m.param("W")`, ``layer/W`` in `named_parameters()`), so two of one module may
    not share a name.

    Nesting may be deep: walking submodules never recurses, and a nested call uses
    about three levels of Python's recursion limit (this `__call__`, your `call` and
    the call between them), so 300 levels fit the default limit of 1000; past it,
    NestingDepthError says how to raise the limit.
    """

    def __call__(self, *args: Any, rng: int | jax.Array | None = None, **kwargs: Any) -> Any:
        """Inputs by position or name; `rng` (PRNG key or seed) switches on randomness
        such as dropout for this call. Returns a ModuleGraph at top level, the output
        node(s) of `call()` inside another module's call."""
        builder = context.builder
        if builder is None or rng is not None:
            return call_module(self, args, kwargs, rng=rng)
        # Nested: extend the caller's graph. Done here rather than in call_module/run, so
        # that each level of nesting costs two frames (this one and call()), not four.
        values = self._bind_arguments(args, kwargs, stacklevel=3)
        caller = context.scope
        scope = caller.enter(self)
        if scope.depth > builder.deepest:
            builder.deepest = scope.depth
        context.scope = scope
        try:
            return self.call(
                *[
                    None if value is None and v.optional else builder.bind(v, value, self)
                    for v, value in zip(self._inputs, values, strict=True)
                ]
            )
        finally:
            context.scope = caller

    @property
    def params(self) -> tuple[Parameter, ...]:
        """The declared parameters, then those held by attributes (see the class docstring)."""
        held = _held_parameters(self)
        if not held:
            return self._params
        found = list(self._params)
        ids = {id(p) for p in found}
        for p in held:
            if id(p) not in ids:
                ids.add(id(p))
                found.append(p)
        names = [p.short_name for p in found]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise NameCollisionError(
                f"{self.functional_name}: two different parameters are both named {twice[0]!r} (declared in "
                "params=(...) or held by attributes); give each its own name"
            )
        return tuple(found)

    def freeze(self) -> "Module":
        """Make every parameter of this module and its submodules non-trainable (see
        cg.Parameter); returns the module. cg.State values are not parameters to train anyway."""
        for p in self.named_parameters().values():
            if not isinstance(p, State):
                p.trainable = False
        return self

    def unfreeze(self) -> "Module":
        """Make every parameter of this module and its submodules trainable again (cg.State
        values stay as they are); returns the module."""
        for p in self.named_parameters().values():
            if not isinstance(p, State):
                p.trainable = True
        return self

    @property
    def children(self) -> dict[str, "Module"]:
        """Submodules by name, read from the attributes now (see the class docstring)."""
        return self._children({})

    def _children(self, owners: dict["Module", bool]) -> dict[str, "Module"]:
        """`children`, with `owners` caching which modules own parameters (see _owns_parameters)."""
        found: dict[str, Module] = {}
        holder: dict[str, str] = {}  # name -> the attribute that gave it
        for attribute, value in vars(self).items():
            name = attribute.lstrip("_") or attribute
            modules = list(_modules_in(value, name, owners))
            if not modules:
                continue
            if name in holder:
                raise NameCollisionError(
                    f"{self.functional_name}: attributes {holder[name]!r} and {attribute!r} both hold "
                    f"modules named {name!r} (a leading underscore is dropped); rename one of them"
                )
            holder[name] = attribute
            found.update(modules)
        return found

    def named_parameters(self) -> dict[str, Parameter]:
        """Every parameter of this module and its submodules, by path (``m1/w``); a
        shared parameter or submodule is listed once, under the first path that reaches it
        (depth first, in attribute order)."""
        found: dict[str, Parameter] = {}
        seen: set[object] = set()  # the modules and parameters already visited
        owners: dict[Module, bool] = {}  # one walk of the tree for all the containers in it

        def enter(module: Module, prefix: str) -> tuple[Iterator[tuple[str, Module]], str]:
            seen.add(module)
            for p in module.params:
                if p not in seen:
                    seen.add(p)
                    found[prefix + p.short_name] = p
            return iter(module._children(owners).items()), prefix

        stack = [enter(self, "")]  # a loop over an explicit stack: nesting may be deeper than recursion allows
        while stack:
            children, prefix = stack[-1]
            for name, child in children:
                if child not in seen:
                    stack.append(enter(child, f"{prefix}{name}/"))
                    break
            else:
                stack.pop()
        return found

    def state_dict(self) -> dict[str, jax.Array]:
        """{path: a copy of the value} for every parameter (copies: compiled steps donate
        the buffers of the values they are given)."""
        return {name: jnp.array(p.value) for name, p in self.named_parameters().items()}

    def load_state_dict(self, state: Mapping[str, ArrayLike]) -> None:
        """Set every parameter from `state` ({path: value}, as `state_dict` gives), copied.
        Nothing changes unless every name, shape and dtype matches."""
        params = self.named_parameters()
        where = f"{self.functional_name}.load_state_dict"
        if not isinstance(state, Mapping):
            raise StateDictError(
                f"{where}: expected a mapping {{name: array}} (what state_dict() returns), got {type(state).__name__}"
            )
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise StateDictError(
                f"{where}: the state lacks {missing or 'nothing'} and has unexpected {unexpected or 'nothing'}"
            )
        values = {}
        for name, p in params.items():
            value = jnp.array(as_value(state[name], f"{where}: {name!r}"))  # a copy
            if value.shape != p.value.shape:
                raise StateDictError(
                    f"{where}: parameter {name!r} is shaped {tuple(p.value.shape)}, "
                    f"the state's value {tuple(value.shape)}"
                )
            if value.dtype != p.value.dtype:
                raise StateDictError(f"{where}: parameter {name!r} is {p.value.dtype}, the state's value {value.dtype}")
            values[name] = value
        for name, value in values.items():
            params[name].value = value

    def _bind_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any], stacklevel: int = 4) -> list[Any]:
        expected = self._inputs
        if len(args) == len(expected) and not kwargs:
            return list(args)
        names = ", ".join(v.short_name for v in expected) or "no inputs"
        if len(args) > len(expected):
            warnings.warn(
                f"{self.functional_name} takes {len(expected)} input(s) ({names}) but was "
                f"called with {len(args)}; ignoring the extra value(s)",
                stacklevel=stacklevel,
            )
            args = args[: len(expected)]
        values = dict(zip(expected, args, strict=False))  # fewer values: optional inputs, or missing (below)
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
            raise InputCountError(
                f"{self.functional_name} takes {len(expected)} input(s) ({names}); missing: {', '.join(missing)}"
            )
        return [values[v] for v in expected]


def _modules_in(value: object, name: str, owners: dict[Module, bool]) -> Iterator[tuple[str, Module]]:
    """(name, module) for each module `value` holds, named as the Module docstring says."""
    if isinstance(value, Module):
        yield name, value
    elif isinstance(value, (list, tuple)):
        index = 0
        for item in value:
            if _owns_parameters(item, owners):
                yield from _modules_in(item, f"{name}.{index}", owners)
                index += 1
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _modules_in(item, f"{name}.{key}", owners)


def _held_parameters(module: Module) -> list[Parameter]:
    """The parameters `module`'s attributes hold, directly or in (nested) lists, tuples and dicts."""
    found: list[Parameter] = []
    for attribute, value in vars(module).items():
        if attribute == "_params":  # the declared ones
            continue
        if isinstance(value, Parameter):
            found.append(value)
        elif isinstance(value, (list, tuple, dict)) and value:
            stack = [value]
            while stack:
                item = stack.pop()
                if isinstance(item, Parameter):
                    found.append(item)
                elif isinstance(item, (list, tuple)):
                    stack.extend(reversed(item))
                elif isinstance(item, dict):
                    stack.extend(reversed(list(item.values())))
    return found


def _held_modules(value: object) -> list[Module]:
    """The modules `value` holds (itself, or in nested lists, tuples and dicts), unnamed."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Module):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return found


def _owns_parameters(value: object, owners: dict[Module, bool]) -> bool:
    """Whether a module in `value` (a module or a container of them) has parameters,
    directly or in its submodules. A loop over the attributes' modules, not recursion
    through `children` (which asks this of its list elements): nesting may be deep.
    `owners` remembers the answer for every module the walk settles, so one pass over
    a tree asks about each module once."""
    roots = _held_modules(value)
    parent: dict[Module, Module | None] = dict.fromkeys(roots)
    stack, settled = list(roots), []
    while stack:
        module = stack.pop()
        known = owners.get(module)
        if known is False:
            continue
        if known or module.params:
            step: Module | None = module
            while step is not None:  # every module on the way down to it owns parameters too
                owners[step] = True
                step = parent[step]
            return True
        settled.append(module)
        for attribute in vars(module).values():
            for child in _held_modules(attribute):
                if child not in parent:
                    parent[child] = module
                    stack.append(child)
    for module in settled:  # nothing under any of them has parameters
        owners[module] = False
    return False


def call_module(
    module: Module,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None = None,
    param_values: Mapping[Parameter, jax.Array] | None = None,
    rng: int | jax.Array | None = None,
) -> Any:
    """Call `module`. At top level this builds a new graph and returns its ModuleGraph;
    `param_values` ({Parameter: value}) then stands in for parameters' own values
    (how compiled training feeds traced parameters), and `rng` (a PRNG key or an
    int seed) feeds `rng_key()` (dropout). Nested calls extend the caller's graph
    and return the output node(s)."""
    values = module._bind_arguments(args, kwargs or {})
    builder = context.builder
    if builder is not None:
        if param_values is not None or rng is not None:
            raise ZkynetError("param_values and rng can only be given to a top-level call")
        return run(module, values, builder, context.scope.enter(module))
    builder = GraphBuilder(param_values, rng)
    try:
        output = run(
            module, values, builder, ModuleCall(module, module.functional_name, None, builder.call_id), as_root=True
        )
    except RecursionError as e:
        if isinstance(e, NestingDepthError):
            raise
        limit = sys.getrecursionlimit()
        raise NestingDepthError(
            f"{module.functional_name}: Python's recursion limit ({limit}) was reached while building the "
            f"graph, with module calls nested {builder.deepest} deep (each level uses about three levels of "
            "that limit, plus whatever its call() calls). If the nesting is meant to be this deep, raise the limit "
            f"before calling, e.g. sys.setrecursionlimit({max(4 * limit, 4 * builder.deepest + 1000)}); or "
            "flatten it: keep repeated layers in a list and loop over them in one call()."
        ) from e
    builder.check_ownership(module, values)
    if builder.state_updates and param_values is None:  # a plain call: its state updates take effect now
        for state, value in builder.state_updates.items():
            if not isinstance(value, jax.core.Tracer):  # under a jit of the user's own: see graph.state_updates
                state.value = value
    return ModuleGraph(module, output, builder)


def build_graph(
    module: Module, args: Sequence[Any], param_values: Mapping[Parameter, jax.Array] | None = None
) -> ModuleGraph:
    """A new graph of `module` on `args` (a ModuleGraph), independent of any graph being
    built around it: how an operator runs a whole module inside itself (scan)."""
    saved = context.builder, context.scope
    context.builder = context.scope = None
    try:
        graph: ModuleGraph = call_module(module, args, param_values=param_values)
        return graph
    finally:
        context.builder, context.scope = saved
