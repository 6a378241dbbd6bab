"""The index rule of indexing.py's module docstring, shared by getitem (indexing.py) and
the integer-array lookups (gather_scatter.py): indices must be integers; concrete ones
out of range raise IndexOutOfRangeError naming the operator, the axis, its size and the
index; a traced one out of range makes a written result NaN (reads fill NaN themselves)."""

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework.errors import IndexOutOfRangeError, ValueTypeError


def _is_concrete(k):
    return isinstance(k, (np.ndarray, np.generic)) or (isinstance(k, jax.Array) and not isinstance(k, jax.core.Tracer))


def _describe(node):
    return f"{node.dtype}{list(node.shape)}"


def _check_range(indices, size, axis, x, where, what):
    """IndexOutOfRangeError unless every one of `indices` (concrete) is in -size..size-1."""
    if indices.dtype.kind not in "iu":
        raise ValueTypeError(
            f"{where}: indices must be integers, got {indices.dtype}; convert them, e.g. indices.astype(int)"
        )
    bad = (indices < -size) | (indices >= size)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        value = int(indices[at])
        place = f" (at {list(at)} of the indices)" if indices.ndim else ""
        raise IndexOutOfRangeError(
            f"{where}: {what} {value}{place} is out of range for axis {axis} of size {size} of the "
            f"input {_describe(x)}; valid indices are {-size}..{size - 1} (negative ones count from the end)"
            if size
            else f"{where}: {what} {value}{place} reads axis {axis} of the input {_describe(x)}, which is empty"
        )


def _poisoned(result, indices, size):
    """`result`, NaN everywhere if a traced index is out of range (the module docstring's
    rule for writes); concrete indices were checked already."""
    if not isinstance(indices, jax.core.Tracer) or not jnp.issubdtype(result.dtype, jnp.inexact):
        return result
    bad = jnp.any((indices < -size) | (indices >= size))
    return jnp.where(bad, jnp.asarray(jnp.nan, result.dtype), result)
