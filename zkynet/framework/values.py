"""Values: what users pass (Python numbers, nested lists, NumPy and JAX arrays) made
JAX arrays, refusing any whose conversion would wrap around or overflow to inf
(NumericOverflowError) rather than silently changing it. Nodes (graph.py), templates
and module calls all take their values through `as_value`."""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework.errors import NumericOverflowError, ValueTypeError

ArrayLike = jax.typing.ArrayLike | Sequence[Any]  # what as_value accepts: nested lists too


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
