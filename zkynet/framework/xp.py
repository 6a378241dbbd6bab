"""The array functions backward rules are written with: jnp's on arrays, zkynet's
operators on nodes. One rule therefore serves both orders of differentiation.

A rule normally runs on arrays (`g`, `out` and the inputs' values), where every
function here is the jnp (or lax) function of the same name: the first-order
backward pass computes exactly what it would with jnp written out. When a graph's
gradient is itself to be differentiated (`back(create_graph=True)`, `zkynet.grad`),
the rule runs on nodes instead: `g` and `out` are nodes, and so is the `.value` of
every input that needs a gradient. The same functions then build zkynet operator
nodes, so the gradient is a graph of zkynet's own operators and their own rules
differentiate it again (derivatives of derivatives, forward mode by transposition).

Rules use these functions and Python's operators (`g * out`, `x.value > 0`); two
pitfalls on nodes: `==` is a node's identity, so compare values with `xp.equal`;
and jnp/lax functions do not accept nodes (a rule that calls one directly supports
first order only, and second order through it raises, naming the operator).

Values that cannot carry a gradient (zeros, masks, iotas, shifts that cancel
out) may stay arrays in both modes: combined with a node they become constants.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from zkynet.framework.graph import Node, operators


def on_nodes(*values: Any) -> bool:
    """Whether any of `values` (or of a list/tuple among them) is a node: graph mode."""
    return any(isinstance(v, Node) or (isinstance(v, (list, tuple)) and on_nodes(*v)) for v in values)


def value_of(x: Any) -> Any:
    """The array behind `x`: a node's value, or `x` itself (for constants computed from a
    value that gets no gradient, such as a softmax's shift)."""
    return x.value if isinstance(x, Node) else x


# ----------------------------------------------------------------------------- elementwise


def where(condition: Any, a: Any, b: Any) -> Any:
    return operators.where(condition, a, b) if on_nodes(condition, a, b) else jnp.where(condition, a, b)


def exp(x: Any) -> Any:
    return operators.exp(x) if on_nodes(x) else jnp.exp(x)


def log(x: Any) -> Any:
    return operators.log(x) if on_nodes(x) else jnp.log(x)


def tanh(x: Any) -> Any:
    return operators.tanh(x) if on_nodes(x) else jnp.tanh(x)


def sqrt(x: Any) -> Any:
    return operators.sqrt(x) if on_nodes(x) else jnp.sqrt(x)


def rsqrt(x: Any) -> Any:
    return 1 / operators.sqrt(x) if on_nodes(x) else lax.rsqrt(x)


def sign(x: Any) -> Any:
    return operators.sign(x) if on_nodes(x) else jnp.sign(x)


def sigmoid(x: Any) -> Any:
    return operators.sigmoid(x) if on_nodes(x) else jax.nn.sigmoid(x)


def abs(x: Any) -> Any:
    return operators.abs(x) if on_nodes(x) else jnp.abs(x)


def conj(x: Any) -> Any:
    return operators.conj(x) if on_nodes(x) else jnp.conj(x)


def real(x: Any) -> Any:
    return operators.real(x) if on_nodes(x) else jnp.real(x)


def sin(x: Any) -> Any:
    return operators.sin(x) if on_nodes(x) else jnp.sin(x)


def cos(x: Any) -> Any:
    return operators.cos(x) if on_nodes(x) else jnp.cos(x)


def erf(x: Any) -> Any:
    return operators.erf(x) if on_nodes(x) else jax.scipy.special.erf(x)


def maximum(a: Any, b: Any) -> Any:
    return operators.maximum(a, b) if on_nodes(a, b) else jnp.maximum(a, b)


def equal(a: Any, b: Any) -> Any:
    """a == b elementwise (on nodes `==` is identity: use this)."""
    return operators.equal(a, b) if on_nodes(a, b) else a == b


def astype(x: Any, dtype: Any) -> Any:
    return operators.astype(x, dtype) if on_nodes(x) else x.astype(dtype)


def stop_gradient(x: Any) -> Any:
    return operators.stop_gradient(x) if on_nodes(x) else lax.stop_gradient(x)


def optimization_barrier(x: Any) -> Any:
    """lax.optimization_barrier on arrays (a scheduling hint for XLA); nothing on nodes."""
    return x if on_nodes(x) else lax.optimization_barrier(x)


# ----------------------------------------------------------------------------- reductions


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return operators.sum(x, axis, keepdims) if on_nodes(x) else jnp.sum(x, axis=axis, keepdims=keepdims)


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return operators.mean(x, axis, keepdims) if on_nodes(x) else jnp.mean(x, axis=axis, keepdims=keepdims)


def prod(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return operators.prod(x, axis, keepdims) if on_nodes(x) else jnp.prod(x, axis=axis, keepdims=keepdims)


def cumprod(x: Any, axis: int, reverse: bool = False) -> Any:
    """The running product along `axis` (from the end with `reverse`): lax.cumprod on
    arrays; on nodes a log-depth scan of products (each step multiplies by the running
    product `shift` places back), built of differentiable operators."""
    if not on_nodes(x):
        return lax.cumprod(x, axis % x.ndim, reverse=reverse)
    axis %= x.ndim
    size, shift = x.shape[axis], 1
    before = (slice(None),) * axis
    while shift < size:
        ones = jnp.ones((*x.shape[:axis], shift, *x.shape[axis + 1 :]), x.dtype)
        if reverse:
            moved = concatenate([x[before + (slice(shift, None),)], ones], axis)
        else:
            moved = concatenate([ones, x[before + (slice(None, size - shift),)]], axis)
        x = x * moved
        shift *= 2
    return x


def cumsum(x: Any, axis: int, reverse: bool = False) -> Any:
    """The running sum along `axis` (from the end with `reverse`): lax.cumsum."""
    return operators.cumsum(x, axis, reverse) if on_nodes(x) else lax.cumsum(x, axis % x.ndim, reverse=reverse)


# ----------------------------------------------------------------------------- shapes


def reshape(x: Any, shape: Sequence[int]) -> Any:
    return operators.reshape(x, shape) if on_nodes(x) else jnp.reshape(x, shape)


def broadcast_to(x: Any, shape: Sequence[int]) -> Any:
    return operators.broadcast_to(x, shape) if on_nodes(x) else jnp.broadcast_to(x, shape)


def transpose(x: Any, axes: Sequence[int] | None = None) -> Any:
    return operators.transpose(x, axes) if on_nodes(x) else jnp.transpose(x, axes)


def swapaxes(x: Any, axis1: int, axis2: int) -> Any:
    if not on_nodes(x):
        return jnp.swapaxes(x, axis1, axis2)
    axes = list(range(x.ndim))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return operators.transpose(x, axes)


def moveaxis(x: Any, source: int, destination: int) -> Any:
    if not on_nodes(x):
        return jnp.moveaxis(x, source, destination)
    axes = list(range(x.ndim))
    axes.insert(destination % x.ndim, axes.pop(source % x.ndim))
    return operators.transpose(x, axes)


def expand_dims(x: Any, axis: int | Sequence[int]) -> Any:
    if not on_nodes(x):
        return jnp.expand_dims(x, axis)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    ndim = x.ndim + len(axes)
    inserted = {a % ndim for a in axes}
    rest = iter(x.shape)
    return operators.reshape(x, [1 if a in inserted else next(rest) for a in range(ndim)])


def squeeze(x: Any, axis: int | Sequence[int]) -> Any:
    if not on_nodes(x):
        return jnp.squeeze(x, axis)
    axes = {a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis)}
    return operators.reshape(x, [n for a, n in enumerate(x.shape) if a not in axes])


def concatenate(xs: Sequence[Any], axis: int = 0) -> Any:
    return operators.concat(xs, axis) if on_nodes(*xs) else jnp.concatenate(xs, axis=axis)


def split(x: Any, sections: int | Sequence[int], axis: int = 0) -> list[Any]:
    """jnp.split: `sections` equal parts, or the indices where parts start."""
    if not on_nodes(x):
        return jnp.split(x, sections, axis=axis)
    size = x.shape[axis]
    bounds = list(range(0, size, size // sections)) if isinstance(sections, int) else [0, *map(int, sections)]
    ends = [*bounds[1:], size]
    before = (slice(None),) * (axis % x.ndim)
    return [x[before + (slice(start, end),)] for start, end in zip(bounds, ends, strict=True)]


def pad(x: Any, config: Sequence[tuple[int, int, int]]) -> Any:
    """lax.pad with zeros: (low, high, interior) per axis; negative low/high crop."""
    return operators.pad_general(x, config) if on_nodes(x) else lax.pad(x, jnp.zeros((), x.dtype), config)


def stack(xs: Sequence[Any], axis: int = 0) -> Any:
    return operators.stack(xs, axis) if on_nodes(*xs) else jnp.stack(xs, axis=axis)


def flip(x: Any, axis: int | Sequence[int]) -> Any:
    return operators.flip(x, axis) if on_nodes(x) else jnp.flip(x, axis)


def take_along_axis(x: Any, indices: Any, axis: int) -> Any:
    """x's elements at integer `indices` (an array: no gradient) along `axis`; out of range: NaN."""
    if on_nodes(x):
        return operators.take_along_axis(x, indices, axis)
    return jnp.take_along_axis(x, indices, axis=axis, mode="fill")


def add_along_axis(x: Any, indices: Any, updates: Any, axis: int) -> Any:
    """x with `updates` added at integer `indices` (an array) along `axis`: the transpose of
    take_along_axis (repeated indices add up, out-of-range ones are dropped)."""
    if on_nodes(x, updates):
        return operators.add_along_axis(x, indices, updates, axis)
    indices = jnp.broadcast_to(indices, updates.shape)
    return x.at[along_axis_key(indices, axis, x.ndim)].add(updates, mode="drop")


def along_axis_key(indices: Any, axis: int, ndim: int) -> tuple[Any, ...]:
    """The index key that reads x.at[key] as take_along_axis(x, indices, axis): `indices`
    on `axis`, a broadcasting iota on every other axis."""
    axis %= ndim
    shape = indices.shape
    return tuple(
        indices if a == axis else lax.broadcasted_iota(jnp.int32, (*(1,) * a, n, *(1,) * (ndim - a - 1)), a)
        for a, n in enumerate(shape)
    )


# ----------------------------------------------------------------------------- linear algebra


def matmul(a: Any, b: Any) -> Any:
    return operators.matmul(a, b) if on_nodes(a, b) else jnp.matmul(a, b)


def einsum(spec: str, *operands: Any) -> Any:
    return operators.einsum(spec, *operands) if on_nodes(*operands) else jnp.einsum(spec, *operands)


def conv_general(
    x: Any,
    w: Any,
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    rhs_dilation: Sequence[int],
    dimension_numbers: Any,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
) -> Any:
    """lax.conv_general_dilated without lhs_dilation (dilate the input with `pad` instead):
    explicit (low, high) padding per spatial axis, negative ones crop."""
    if on_nodes(x, w):
        return operators.conv_general(
            x,
            w,
            strides,
            padding,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
        )
    return lax.conv_general_dilated(
        x,
        w,
        tuple(strides),
        tuple(padding),
        rhs_dilation=tuple(rhs_dilation),
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
    )


# ----------------------------------------------------------------------------- constants


def zeros(shape: Sequence[int], dtype: Any) -> jax.Array:
    """An array in both modes: zeros carry no gradient."""
    return jnp.zeros(shape, dtype)


def zeros_like(x: Any) -> jax.Array:
    return jnp.zeros(x.shape, x.dtype)
