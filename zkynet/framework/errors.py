"""The errors zkynet raises, so users can catch exactly what went wrong.

Each also derives from the built-in exception a Python user would expect
(TypeError for a bad call, ValueError for bad shapes, ...), so generic
handlers keep working.
"""


class ZkynetError(Exception):
    """Base class of every error raised by zkynet itself."""


class InputCountError(ZkynetError, TypeError):
    """A module or operator was called with the wrong number of inputs."""


class UnknownNameError(ZkynetError, LookupError):
    """`param(name)` / `input(name)` asked for a name the function does not have."""


class ValueTypeError(ZkynetError, TypeError):
    """A value that is not a number or a numeric array was given."""


class ShapeError(ZkynetError, ValueError):
    """An operator got input shapes it cannot combine."""


class GradientError(ZkynetError, ValueError):
    """`grad()` was asked for something it cannot answer: nothing used, or ambiguous."""


class BackwardNotRunError(ZkynetError, RuntimeError):
    """`grad()` was called before `back()`."""


class UnregisteredParameterError(ZkynetError, LookupError):
    """A call used a parameter that its module does not list in `named_parameters()`:
    training would never update it and checkpoints would leave it out."""


class NameCollisionError(ZkynetError, ValueError):
    """Two attributes of a module give its submodules the same name (``_m1`` and ``m1``)."""


class StateDictError(ZkynetError, ValueError):
    """`load_state_dict` got names, shapes or dtypes that do not match the module's parameters."""


class IndexOutOfRangeError(ZkynetError, IndexError):
    """An integer index (x[7], op.take) points outside the axis it reads."""


class LabelError(ZkynetError, ValueError):
    """Class labels that a loss cannot use: not integers, out of range, misshaped, or none at all."""


class BackwardRuleError(ZkynetError, ValueError):
    """An operator's backward rule (vjp) returned the wrong number of cotangents, or a
    cotangent whose shape cannot be summed back to its input's shape."""


class NumericOverflowError(ZkynetError, OverflowError):
    """A concrete value does not fit the dtype it becomes (a Python int beyond int32, a
    float beyond float32), or an integer computation overflowed its dtype."""


class NestingDepthError(ZkynetError, RecursionError):
    """Module calls nested deeper than Python's recursion limit allows."""


class PlotError(ZkynetError, ValueError):
    """plot_cg cannot draw this graph as asked (too big to lay out, a bad save_path, dot timed out)."""


class HigherOrderError(ZkynetError, NotImplementedError):
    """A derivative of a derivative (or forward mode) through an operator whose backward
    rule cannot run on nodes: the message names the operator and where it sits."""
