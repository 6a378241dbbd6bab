"""Templates: the named slots a function declares, and the Function base they belong to.

`Variable` is an input slot, `Parameter` a trainable value the function owns,
`Constant` a named value without a gradient. A Function (a Module or an
Operator) declares them once; each call fills them with nodes of a new graph.
"""

import functools
import re
from collections.abc import Iterable
from typing import Any, TypeVar

import jax

from zkynet.framework.errors import ShapeError, UnknownNameError
from zkynet.framework.graph import ArrayLike, OperatorSyntax, as_value


class Template:
    """A named slot of a function: an input Variable, a Parameter or a Constant."""

    def __init__(self, name: str):
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {type(self).__name__} needs a non-empty string name, got {name!r}")
        self.short_name = name

    @property
    def name(self) -> str:
        return self.short_name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.short_name!r})"


class Variable(Template):
    """An input slot of a Module or Operator; a call fills it with a value or a node.
    An `optional` slot may be left out (or given None): call() then receives None."""

    def __init__(self, name: str, optional: bool = False):
        super().__init__(name)
        self.optional = optional


class Parameter(OperatorSyntax, Template):
    """A trainable value owned by a module. In a graph, each parameter is one node,
    however many times the call uses it. A new value must keep the parameter's shape
    (optimizers and checkpoints rely on it); its dtype may change (casting a model).

    `trainable=False` (or `module.freeze()`) freezes it: its node gets no gradient
    (graph.grad gives zeros), TrainStep neither updates it nor keeps optimizer state
    for it, and it is still saved and loaded with the others (state_dict, checkpoints)."""

    def __init__(self, name: str, value: ArrayLike, trainable: bool = True):
        super().__init__(name)
        self.value = value
        self.trainable = trainable

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, trainable: bool) -> None:
        self._trainable = bool(trainable)

    @property
    def value(self) -> jax.Array:
        return self._value

    @value.setter
    def value(self, value: ArrayLike) -> None:
        array = as_value(value, f"parameter '{self.short_name}'")
        current = self.__dict__.get("_value")
        if current is not None and array.shape != current.shape:
            raise ShapeError(
                f"parameter '{self.short_name}' is shaped {tuple(current.shape)}; "
                f"a new value must keep that shape, got {tuple(array.shape)}"
            )
        self._value = array


class State(Parameter):
    """A value a module keeps and updates itself instead of training it (BatchNorm's running
    statistics): never trainable (freeze/unfreeze leave it alone), saved and loaded with the
    parameters, and set by the forward pass with `cg.update_state(state, value)`."""

    def __init__(self, name: str, value: ArrayLike):
        super().__init__(name, value, trainable=False)

    @property
    def trainable(self) -> bool:
        return False

    @trainable.setter
    def trainable(self, trainable: bool) -> None:
        if trainable:
            raise ValueError(f"state {self.short_name!r} is not a trainable parameter; the forward pass updates it")


class Constant(Template):
    """A named value that takes part in computation but gets no gradient."""

    def __init__(self, name: str, value: ArrayLike):
        super().__init__(name)
        self.value = as_value(value, f"constant '{name}'")


@functools.cache
def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


T = TypeVar("T", bound=Template)


class Function:
    """Something applied to named inputs: a Module (composes operators) or an Operator
    (a hand-differentiated primitive)."""

    _inputs: tuple[Variable, ...]
    _params: tuple[Parameter, ...]
    _name: str | None

    def __init__(self, inputs: Iterable[Variable] = (), params: Iterable[Parameter] = (), name: str | None = None):
        self._inputs = self._checked(inputs, Variable, "inputs")
        self._params = self._checked(params, Parameter, "params")
        self._name = name

    def _checked(self, templates: Iterable[Any], kind: type[T], what: str) -> tuple[T, ...]:
        checked = tuple(templates)
        names = [t.short_name for t in checked if isinstance(t, kind)]
        if len(names) != len(checked):
            raise TypeError(f"{type(self).__name__}: every one of {what} must be a cg.{kind.__name__}, got {checked!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"{type(self).__name__}: {what} names must be unique, got {names}")
        return checked

    @property
    def functional_name(self) -> str:
        return self._name or type(self).__name__

    @property
    def inputs(self) -> tuple[Variable, ...]:
        return self._inputs

    @property
    def params(self) -> tuple[Parameter, ...]:
        return self._params

    def input(self, name: str) -> Variable:
        """The input Variable called `name`."""
        return self._lookup(self._inputs, name, "input")

    def param(self, name: str) -> Parameter:
        """The Parameter called `name`."""
        return self._lookup(self.params, name, "parameter")

    def _lookup(self, templates: tuple[T, ...], name: str, kind: str) -> T:
        for template in templates:
            if template.short_name == name:
                return template
        known = ", ".join(t.short_name for t in templates) or "none"
        raise UnknownNameError(f"{self.functional_name} has no {kind} named {name!r}; its {kind}s are: {known}")

    def call(self, *inputs: Any) -> Any:
        """The computation, on the nodes bound to the inputs (None for a left-out optional one)."""
        raise NotImplementedError(f"{type(self).__name__} must define call()")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.functional_name}>"
