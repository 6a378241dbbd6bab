"""zkynet's operators, imported as ``op``.

Each operator is a small cg.Operator: its forward (`call`) and its
hand-written backward (`vjp`, the vector-Jacobian product) sit side by side.
Binary operators broadcast like NumPy; their vjp may return cotangents with
broadcast dimensions, which the graph sums back to each input's shape.
JAX is the array library here, never the differentiator.

The lowercase names at the bottom (`op.add`, `op.sum`, `op.conv2d`, ...) are
what models call.
"""
import builtins
import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from zkynet.framework import computation_graph as cg
from zkynet.framework.computation_graph import Node, Operator


def _axes(axis, ndim):
    """`axis` (None, int or sequence, negatives allowed) as a sorted tuple of axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    return tuple(sorted(int(a) + ndim if a < 0 else int(a) for a in axes))


def _pair(v, what):
    if isinstance(v, numbers.Integral):
        return int(v), int(v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, numbers.Integral) for i in v):
        return int(v[0]), int(v[1])
    raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")


def _lowest(dtype):
    """The identity of max for `dtype`: -inf, or the smallest integer."""
    return -jnp.inf if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).min


class _Fused(Operator):
    """A built-in operator: eager calls run fused (see cg.Operator), except a vjp
    that is no more than one array operation."""
    fuse_call = fuse_vjp = True


# ----------------------------------------------------------------------------- elementwise, binary

class _Binary(_Fused):
    input_names = ("a", "b")


class Add(_Binary):
    """a + b"""
    vjp_uses_inputs = False
    vjp_uses_out = False
    fuse_vjp = False
    def call(self, a, b): return a.value + b.value
    def vjp(self, g, out, a, b): return g, g


class Sub(_Binary):
    """a - b"""
    vjp_uses_inputs = False
    vjp_uses_out = False
    fuse_vjp = False
    def call(self, a, b): return a.value - b.value
    def vjp(self, g, out, a, b): return g, -g


class Mult(_Binary):
    """a * b, elementwise"""
    vjp_uses_out = False
    def call(self, a, b): return a.value * b.value
    def vjp(self, g, out, a, b): return g * b.value, g * a.value


class Div(_Binary):
    """a / b"""
    def call(self, a, b): return a.value / b.value
    def vjp(self, g, out, a, b): return g / b.value, -g * out / b.value


class Pow(_Binary):
    """a ** b; d/db uses log(a), so it is defined for a > 0 (0 where a == 0, like JAX)."""
    def call(self, a, b): return a.value ** b.value

    def vjp(self, g, out, a, b):
        x, y = a.value, b.value
        da = g * jnp.where(y == 0, 0, y * x ** (y - 1)) if a.requires_grad else None
        db = g * jnp.log(jnp.where(x == 0, 1, x)) * out if b.requires_grad else None
        return da, db


class Maximum(_Binary):
    """Elementwise max; ties split the gradient evenly (as JAX does)."""
    vjp_uses_out = False
    def call(self, a, b): return jnp.maximum(a.value, b.value)

    def vjp(self, g, out, a, b):
        share = jnp.where(a.value > b.value, 1.0, jnp.where(a.value == b.value, 0.5, 0.0))
        return g * share, g * (1 - share)


class Minimum(_Binary):
    """Elementwise min; ties split the gradient evenly (as JAX does)."""
    vjp_uses_out = False
    def call(self, a, b): return jnp.minimum(a.value, b.value)

    def vjp(self, g, out, a, b):
        share = jnp.where(a.value < b.value, 1.0, jnp.where(a.value == b.value, 0.5, 0.0))
        return g * share, g * (1 - share)


class Where(_Fused):
    """`a` where `condition` holds, else `b` (the condition gets no gradient)."""
    vjp_uses_out = False
    input_names = ("condition", "a", "b")
    def call(self, c, a, b): return jnp.where(c.value, a.value, b.value)
    def vjp(self, g, out, c, a, b): return None, jnp.where(c.value, g, 0), jnp.where(c.value, 0, g)


# ----------------------------------------------------------------------------- elementwise, unary

class _Unary(_Fused):
    input_names = ("x",)


class Neg(_Unary):
    vjp_uses_inputs = False
    vjp_uses_out = False
    fuse_vjp = False
    def call(self, x): return -x.value
    def vjp(self, g, out, x): return (-g,)


class Square(_Unary):
    vjp_uses_out = False
    def call(self, x): return x.value * x.value
    def vjp(self, g, out, x): return (2 * x.value * g,)


class Sqrt(_Unary):
    vjp_uses_inputs = False
    def call(self, x): return jnp.sqrt(x.value)
    def vjp(self, g, out, x): return (g * 0.5 / out,)


class Exp(_Unary):
    vjp_uses_inputs = False
    def call(self, x): return jnp.exp(x.value)
    def vjp(self, g, out, x): return (g * out,)


class Log(_Unary):
    vjp_uses_out = False
    def call(self, x): return jnp.log(x.value)
    def vjp(self, g, out, x): return (g / x.value,)


class Abs(_Unary):
    vjp_uses_out = False
    def call(self, x): return jnp.abs(x.value)
    def vjp(self, g, out, x): return (g * jnp.sign(x.value),)


class Tanh(_Unary):
    vjp_uses_inputs = False
    def call(self, x): return jnp.tanh(x.value)
    def vjp(self, g, out, x): return (g * (1 - out * out),)


class Sigmoid(_Unary):
    vjp_uses_inputs = False
    def call(self, x): return jax.nn.sigmoid(x.value)
    def vjp(self, g, out, x): return (g * out * (1 - out),)


class Softplus(_Unary):
    """log(1 + exp(x)), computed without overflow; its derivative is sigmoid(x)."""
    vjp_uses_out = False
    def call(self, x): return jnp.maximum(x.value, 0) + jnp.log1p(jnp.exp(-jnp.abs(x.value)))
    def vjp(self, g, out, x): return (g * jax.nn.sigmoid(x.value),)


class Relu(_Unary):
    vjp_uses_out = False
    def call(self, x): return jnp.maximum(x.value, 0)
    def vjp(self, g, out, x): return (jnp.where(x.value > 0, g, 0),)


class LeakyRelu(_Unary):
    """x for x >= 0, else negative_slope * x."""
    vjp_uses_out = False
    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def call(self, x): return jnp.where(x.value >= 0, x.value, self.negative_slope * x.value)
    def vjp(self, g, out, x): return (jnp.where(x.value >= 0, g, self.negative_slope * g),)


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


class Gelu(_Unary):
    """x * Phi(x) (exact, as PyTorch's default) or its tanh approximation
    (`approximate=True`, or PyTorch's spelling "tanh"; "none" means exact)."""
    vjp_uses_out = False
    def __init__(self, approximate=False):
        super().__init__()
        if approximate not in (True, False, "tanh", "none"):
            raise ValueError(f"gelu approximate must be True/False, 'tanh' or 'none', got {approximate!r}")
        self.approximate = approximate in (True, "tanh")

    def call(self, x):
        x = x.value
        if self.approximate:
            return 0.5 * x * (1 + jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1 + jax.scipy.special.erf(x / math.sqrt(2)))

    def vjp(self, g, out, x):
        x = x.value
        if self.approximate:
            t = jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
            slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
        else:
            cdf = 0.5 * (1 + jax.scipy.special.erf(x / math.sqrt(2)))
            slope = cdf + x * jnp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return (g * slope,)


# ----------------------------------------------------------------------------- reductions

class _Reduction(_Unary):
    def __init__(self, axis=None, keepdims=False):
        super().__init__()
        self.axis = axis
        self.keepdims = keepdims

    def _unreduce(self, y, x):
        """`y`, shaped like this reduction's output, made broadcastable against `x`."""
        return y if self.keepdims else jnp.expand_dims(y, _axes(self.axis, x.ndim))


class Sum(_Reduction):
    vjp_uses_inputs = False
    vjp_uses_out = False
    def call(self, x): return jnp.sum(x.value, axis=self.axis, keepdims=self.keepdims)
    def vjp(self, g, out, x): return (jnp.broadcast_to(self._unreduce(g, x), x.shape),)


class Mean(_Reduction):
    vjp_uses_inputs = False
    vjp_uses_out = False
    def call(self, x): return jnp.mean(x.value, axis=self.axis, keepdims=self.keepdims)

    def vjp(self, g, out, x):
        count = math.prod(x.shape[a] for a in _axes(self.axis, x.ndim))
        return (jnp.broadcast_to(self._unreduce(g, x) / count, x.shape),)


class Max(_Reduction):
    """Largest element; ties split the gradient evenly (as JAX does)."""
    def call(self, x): return jnp.max(x.value, axis=self.axis, keepdims=self.keepdims)

    def vjp(self, g, out, x):
        hits = (x.value == self._unreduce(out, x)).astype(g.dtype)
        share = hits / jnp.sum(hits, axis=_axes(self.axis, x.ndim), keepdims=True)
        return (share * self._unreduce(g, x),)


def _log_normalizer(x, axis):
    """(shift, x - shift, log(sum(exp(x - shift)))) over `axis`, kept as size-1 dims; the
    shift is the max, so exp never overflows and huge logits lose no precision."""
    shift = jnp.max(x, axis=axis, keepdims=True)
    shift = jnp.where(jnp.isfinite(shift), shift, 0)
    shifted = x - shift
    return shift, shifted, jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


class Logsumexp(_Reduction):
    def call(self, x):
        axes = _axes(self.axis, x.ndim)
        shift, _, log_total = _log_normalizer(x.value, axes)
        out = shift + log_total
        return out if self.keepdims else jnp.squeeze(out, axes)

    def vjp(self, g, out, x):
        return (self._unreduce(g, x) * jnp.exp(x.value - self._unreduce(out, x)),)


class LogSoftmax(_Unary):
    """x - logsumexp(x): log-probabilities along `axis`, never exponentiated first."""
    vjp_uses_inputs = False
    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis

    def call(self, x):
        _, shifted, log_total = _log_normalizer(x.value, _axes(self.axis, x.ndim))
        return shifted - log_total

    def vjp(self, g, out, x):
        return (g - jnp.exp(out) * jnp.sum(g, axis=self.axis, keepdims=True),)


class Softmax(LogSoftmax):
    """exp(log_softmax(x)): probabilities along `axis`, computed in log space."""
    vjp_uses_inputs = False
    def call(self, x): return jnp.exp(super().call(x))

    def vjp(self, g, out, x):
        return (out * (g - jnp.sum(g * out, axis=self.axis, keepdims=True)),)


class LayerNorm(_Unary):
    """(x - mean) / sqrt(var + eps) over the last axis (the affine part is the module's)."""
    def __init__(self, eps=1e-5):
        super().__init__()
        self.eps = eps

    def call(self, x):
        centered = x.value - jnp.mean(x.value, axis=-1, keepdims=True)
        return centered * lax.rsqrt(jnp.mean(centered * centered, axis=-1, keepdims=True) + self.eps)

    def vjp(self, g, out, x):
        centered = x.value - jnp.mean(x.value, axis=-1, keepdims=True)
        inv_std = lax.rsqrt(jnp.mean(centered * centered, axis=-1, keepdims=True) + self.eps)
        mean_g = jnp.mean(g, axis=-1, keepdims=True)
        return (inv_std * (g - mean_g - out * jnp.mean(g * out, axis=-1, keepdims=True)),)


# ----------------------------------------------------------------------------- linear algebra

class Matmul(_Binary):
    """a @ b with NumPy's rules: vectors, matrices and batches of matrices (broadcast)."""
    vjp_uses_out = False
    def call(self, a, b): return jnp.matmul(a.value, b.value)

    def vjp(self, g, out, a, b):
        x, y = a.value, b.value
        if x.ndim == 1 and y.ndim == 1:
            return g * y, g * x
        if x.ndim == 1:  # (k,) @ (..., k, n): treat x as (1, k)
            x, g = x[None, :], jnp.expand_dims(g, -2)
        if y.ndim == 1:  # (..., m, k) @ (k,): treat y as (k, 1)
            y, g = y[:, None], jnp.expand_dims(g, -1)
        da = jnp.matmul(g, jnp.swapaxes(y, -1, -2)) if a.requires_grad else None
        if not b.requires_grad:
            db = None
        elif y.ndim == 2 and x.ndim > 2:  # a batch against one matrix: one big matmul
            db = jnp.matmul(x.reshape(-1, x.shape[-1]).T, g.reshape(-1, g.shape[-1]))
        else:
            db = jnp.matmul(jnp.swapaxes(x, -1, -2), g)
        if a.value.ndim == 1 and da is not None:
            da = jnp.squeeze(da, -2)
        if b.value.ndim == 1 and db is not None:
            db = jnp.squeeze(db, -1)
        return da, db


class Dot(Matmul):
    """Dot product of vectors / matrices (use matmul for batches)."""
    def call(self, a, b):
        if not (1 <= a.ndim <= 2 and 1 <= b.ndim <= 2):
            raise ValueError("dot takes vectors and matrices; use matmul for batched inputs")
        return jnp.matmul(a.value, b.value)


# ----------------------------------------------------------------------------- shapes

class Reshape(_Unary):
    vjp_uses_inputs = False
    vjp_uses_out = False
    fuse_vjp = False
    def __init__(self, shape):
        super().__init__()
        self.new_shape = tuple(shape) if not isinstance(shape, int) else (shape,)

    def call(self, x): return jnp.reshape(x.value, self.new_shape)
    def vjp(self, g, out, x): return (jnp.reshape(g, x.shape),)


class Transpose(_Unary):
    """Permute axes (reverse them by default)."""
    vjp_uses_inputs = False
    vjp_uses_out = False
    def __init__(self, axes=None):
        super().__init__()
        self.axes = axes

    def call(self, x): return jnp.transpose(x.value, self.axes)

    def vjp(self, g, out, x):
        if self.axes is None:
            return (jnp.transpose(g),)
        return (jnp.transpose(g, np.argsort([a % x.ndim for a in self.axes])),)


class BroadcastTo(_Unary):
    vjp_uses_inputs = False
    vjp_uses_out = False
    fuse_vjp = False
    def __init__(self, shape):
        super().__init__()
        self.new_shape = tuple(shape)

    def call(self, x): return jnp.broadcast_to(x.value, self.new_shape)
    def vjp(self, g, out, x): return (g,)  # the graph sums g back to x's shape


class Concat(_Fused):
    """Join inputs along an existing axis."""
    vjp_uses_inputs = False
    vjp_uses_out = False
    variadic = True

    def __init__(self, axis=0):
        super().__init__()
        self.axis = axis

    def call(self, *xs): return jnp.concatenate([x.value for x in xs], axis=self.axis)

    def vjp(self, g, out, *xs):
        ends = np.cumsum([x.shape[self.axis] for x in xs])
        return tuple(jnp.split(g, ends[:-1], axis=self.axis))


class Stack(_Fused):
    """Join inputs along a new axis."""
    vjp_uses_inputs = False
    vjp_uses_out = False
    variadic = True

    def __init__(self, axis=0):
        super().__init__()
        self.axis = axis

    def call(self, *xs): return jnp.stack([x.value for x in xs], axis=self.axis)

    def vjp(self, g, out, *xs):
        g = jnp.moveaxis(g, self.axis, 0)
        return tuple(g[i] for i in range(len(xs)))


class _Position:
    """Where an integer stood in an index key (its value is passed as an input)."""
    def __repr__(self):
        return "<int>"


_POSITION = _Position()


class Getitem(_Fused):
    """x[key] for a key of ints, slices, None, Ellipsis, integer or boolean arrays.
    `op.getitem` moves the plain integers of the key into the `positions` input
    instead of compiling them in, so x[0], x[1], ... (a loop over time steps)
    share one computation; `key` keeps a placeholder where each one stood."""
    vjp_uses_inputs = False  # only `positions`, a constant that is rebuilt with the graph
    vjp_uses_out = False
    input_names = ("x", "positions")

    def __init__(self, key, single):
        super().__init__()
        self.key, self.single = key, single

    def _key(self, positions):
        values = iter(positions[i] for i in range(positions.shape[0]))
        key = tuple(next(values) if k is _POSITION else k for k in self.key)
        return key[0] if self.single else key

    def call(self, x, positions): return x.value[self._key(positions.value)]

    def vjp(self, g, out, x, positions):
        return jnp.zeros(x.shape, g.dtype).at[self._key(positions.value)].add(g), None


def _split_key(key):
    """(the key with placeholders for its plain ints, those ints, whether it was one item)."""
    parts = tuple(np.asarray(k) if isinstance(k, list) else k  # NumPy's x[[1, 0]]
                  for k in (key if isinstance(key, tuple) else (key,)))
    is_int = [isinstance(k, numbers.Integral) and not isinstance(k, (bool, np.bool_)) for k in parts]
    template = tuple(_POSITION if i else k for k, i in zip(parts, is_int))
    positions = _positions(tuple(int(k) for k, i in zip(parts, is_int) if i))
    return template, positions, not isinstance(key, tuple)


@functools.lru_cache(maxsize=4096)
def _positions(ints):
    """The integers of an index key as a device array, made once per distinct key
    (concrete even when first asked for inside a jit trace, so it may be cached)."""
    with jax.ensure_compile_time_eval():
        return jnp.asarray(np.array(ints, np.int32).reshape(len(ints)))


class Take(_Fused):
    """Elements of x at integer `indices` along `axis` (None: of x flattened): an
    embedding lookup for axis 0. The indices may be a node (they get no gradient)."""
    vjp_uses_out = False
    input_names = ("x", "indices")

    def __init__(self, axis=0):
        super().__init__()
        self.axis = axis

    def call(self, x, indices): return jnp.take(x.value, indices.value, axis=self.axis)

    def vjp(self, g, out, x, indices):
        if self.axis is None:
            return jnp.zeros(x.value.size, g.dtype).at[indices.value].add(g).reshape(x.shape), None
        where = (slice(None),) * (int(self.axis) % x.ndim) + (indices.value,)
        return jnp.zeros(x.shape, g.dtype).at[where].add(g), None


# ----------------------------------------------------------------------------- convolution and pooling

_NCHW = ("NCHW", "OIHW", "NCHW")


def _padding(padding, size, kernel, stride):
    """Explicit ((top, bottom), (left, right)) padding from an int, a pair, explicit pairs,
    'valid' or 'same' (output size = ceil(input / stride), as TensorFlow)."""
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return (0, 0), (0, 0)
        if padding.lower() != "same":
            raise ValueError(f"padding must be 'same', 'valid', an int or pairs, got {padding!r}")
        pads = []
        for n, k, s in zip(size, kernel, stride):
            total = builtins.max((-(-n // s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


class Conv2d(_Fused):
    """2-D cross-correlation of x (N, C, H, W) with kernels w (O, C, kh, kw)."""
    vjp_uses_out = False
    input_names = ("x", "w")

    def __init__(self, stride=1, padding=0):
        super().__init__()
        self.stride = _pair(stride, "stride")
        self.padding = padding

    def _pads(self, x, w):
        return _padding(self.padding, x.shape[2:], w.shape[2:], self.stride)

    def call(self, x, w):
        if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
            raise ValueError("conv2d needs x (N, C, H, W) and w (O, C, kh, kw) with the same C")
        return lax.conv_general_dilated(x.value, w.value, self.stride, self._pads(x, w),
                                        dimension_numbers=_NCHW)

    def vjp(self, g, out, x, w):
        pads = self._pads(x, w)
        dx = dw = None
        if x.requires_grad:  # a transposed convolution: g dilated by the stride, kernel flipped
            back_pads = [(k - 1 - lo, n - 1 - (m - 1) * s + lo)
                         for n, m, k, s, (lo, _) in zip(x.shape[2:], g.shape[2:], w.shape[2:],
                                                        self.stride, pads)]
            flipped = jnp.swapaxes(jnp.flip(w.value, (2, 3)), 0, 1)
            dx = lax.conv_general_dilated(g, flipped, (1, 1), back_pads, lhs_dilation=self.stride,
                                          dimension_numbers=_NCHW)
        if w.requires_grad:  # correlate x with g (dilated by the stride), batch as the sum axis
            dw = lax.conv_general_dilated(x.value, g, (1, 1), pads, rhs_dilation=self.stride,
                                          dimension_numbers=("CNHW", "IOHW", "CNHW"))
            dw = dw[:, :, :w.shape[2], :w.shape[3]]
        return dx, dw


class _Pool2d(_Unary):
    """Pooling over kh x kw windows of x (N, C, H, W)."""
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride") if stride is not None else self.kernel
        self.padding = _pair(padding, "padding")

    def _reduce(self, x, init, reducer):
        if x.ndim != 4:
            raise ValueError(f"{self.functional_name} needs x shaped (N, C, H, W)")
        pads = ((0, 0), (0, 0)) + tuple((p, p) for p in self.padding)
        return lax.reduce_window(x, init, reducer, (1, 1) + self.kernel, (1, 1) + self.stride, pads)

    def _windows(self, padded, out_hw):
        """(i, j, the (N, C, Ho, Wo) slice of `padded` at offset (i, j) of every window)."""
        (sh, sw), (ho, wo) = self.stride, out_hw
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                yield i, j, padded[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]

    def _scatter(self, parts, x_shape):
        """Sum the per-offset (i, j, update) back into x's shape: strided placement via
        interior padding (no scatter), then drop the pooling padding."""
        (sh, sw), (ph, pw) = self.stride, self.padding
        hp, wp = x_shape[2] + 2 * ph, x_shape[3] + 2 * pw
        total = None
        for i, j, update in parts:
            ho, wo = update.shape[2:]
            config = ((0, 0, 0), (0, 0, 0), (i, hp - i - sh * (ho - 1) - 1, sh - 1),
                      (j, wp - j - sw * (wo - 1) - 1, sw - 1))
            placed = lax.pad(update, jnp.zeros((), update.dtype), config)
            total = placed if total is None else total + placed
        return total[:, :, ph:ph + x_shape[2], pw:pw + x_shape[3]]


class MaxPool2d(_Pool2d):
    """Max over each window; ties split the gradient evenly."""
    def call(self, x):
        return self._reduce(x.value, jnp.array(_lowest(x.dtype), x.dtype), lax.max)

    def vjp(self, g, out, x):
        ph, pw = self.padding
        padded = jnp.pad(x.value, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=_lowest(x.dtype))
        hits = [(i, j, window == out) for i, j, window in self._windows(padded, out.shape[2:])]
        count = hits[0][2].astype(g.dtype)
        for _, _, hit in hits[1:]:
            count = count + hit
        share = g / count
        return (self._scatter(((i, j, jnp.where(hit, share, 0)) for i, j, hit in hits), x.shape),)


class AvgPool2d(_Pool2d):
    """Mean over each window (padding counts as zeros, as PyTorch's default)."""
    vjp_uses_inputs = False
    vjp_uses_out = False
    def call(self, x):
        return self._reduce(x.value, jnp.array(0, x.dtype), lax.add) / math.prod(self.kernel)

    def vjp(self, g, out, x):
        share = g / math.prod(self.kernel)
        offsets = ((i, j) for i in range(self.kernel[0]) for j in range(self.kernel[1]))
        return (self._scatter(((i, j, share) for i, j in offsets), x.shape),)


# ----------------------------------------------------------------------------- randomness

class Dropout(_Fused):
    """Zero each element with probability `rate`, scale the rest by 1/(1 - rate).
    The mask comes from the PRNG `key` input, so a step is reproducible (and the
    backward pass recomputes the same mask instead of storing it)."""
    vjp_uses_out = False
    input_names = ("x", "key")

    def __init__(self, rate):
        super().__init__()
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate

    def _keep(self, x, key):
        return jax.random.bernoulli(key.value, 1 - self.rate, x.shape)

    def call(self, x, key): return jnp.where(self._keep(x, key), x.value / (1 - self.rate), 0)
    def vjp(self, g, out, x, key): return jnp.where(self._keep(x, key), g / (1 - self.rate), 0), None


# ----------------------------------------------------------------------------- loops

class Scan(Operator):
    """Run the module `cell` along the leading axis of the `xs` inputs (lax.scan): step t
    computes cell(*xs[t], *carry) -> the new carry (a node or a tuple of nodes, each
    (..., width)). The output stacks every step's new carry, concatenated along the
    last axis: (T, ..., total width).

    One node stands for the whole loop, so the compiled program (and its compile
    time) does not grow with T. The forward scan also keeps, for every step, the
    values that backward rules read (the activations: see Operator.vjp_uses_*);
    the backward pass is a reverse scan that rebuilds each step's graph, puts
    those saved values back into its nodes and applies zkynet's own back():
    backpropagation through time, where the rebuilt forward computations are dead
    code that XLA drops.
    Inputs: *xs, *initial carry, *the cell's parameters (so their gradients flow).
    """
    variadic = True

    def __init__(self, cell, n_xs, n_carry):
        super().__init__()
        self.cell, self.n_xs, self.n_carry = cell, n_xs, n_carry
        self.cell_params = tuple(cell.named_parameters().values())
        self._activations = None

    @property
    def functional_name(self):
        return f"scan({self.cell.functional_name})"

    def _parts(self, values):
        return (values[:self.n_xs], values[self.n_xs:self.n_xs + self.n_carry],
                values[self.n_xs + self.n_carry:])

    def _step(self, xs_t, carry, params):
        """The graph of one step, and its operator nodes whose values some backward rule
        reads (what the forward pass keeps; the rest is recomputed only if needed)."""
        graph = cg.build_graph(self.cell, (*xs_t, *carry), param_values=dict(zip(self.cell_params, params)))
        read = set()
        for node in graph.nodes:
            if isinstance(node, cg.OperatorNode):
                if node.ref.vjp_uses_out:
                    read.add(node)
                if node.ref.vjp_uses_inputs:
                    read.update(node.inputs)
        return graph, [n for n in graph.nodes if isinstance(n, cg.OperatorNode) and n in read]

    def call(self, *nodes):
        xs, carry, params = self._parts([n.value for n in nodes])

        def step(carry, xs_t):
            graph, computed = self._step(xs_t, carry, params)
            new = tuple(root.value for root in graph.roots)
            return new, (jnp.concatenate(new, axis=-1), tuple(n.value for n in computed))
        ys, self._activations = lax.scan(step, tuple(carry), tuple(xs))[1]
        return ys

    def vjp(self, g, out, *nodes):
        xs, carry, params = self._parts([n.value for n in nodes])
        bounds = np.cumsum([c.shape[-1] for c in carry])[:-1]
        split = lambda a: jnp.split(a, bounds, axis=-1)  # noqa: E731
        entering = [jnp.concatenate([c[None], s[:-1]]) for c, s in zip(carry, split(out))]

        def back_step(totals, step_values):
            d_carry, d_params = totals
            xs_t, carry_t, activations_t, g_t = step_values
            graph, computed = self._step(xs_t, carry_t, params)
            for node, value in zip(computed, activations_t):
                node.value = value  # the forward's own values: no recomputation survives
            graph.back(tuple(a + b for a, b in zip(split(g_t), d_carry)))
            d_inputs = [graph.grad(v) for v in self.cell.inputs]
            d_params = tuple(total + graph.grad(p) if graph.uses(p) else total
                             for total, p in zip(d_params, self.cell_params))
            return (tuple(d_inputs[self.n_xs:]), d_params), tuple(d_inputs[:self.n_xs])

        zeros = (tuple(jnp.zeros_like(c) for c in carry), tuple(jnp.zeros_like(p) for p in params))
        per_step = (tuple(xs), tuple(entering), self._activations, g)
        (d_carry, d_params), d_xs = lax.scan(back_step, zeros, per_step, reverse=True)
        return (*d_xs, *d_carry, *d_params)


# ----------------------------------------------------------------------------- what models call

add, sub, mult, div, pow = Add(), Sub(), Mult(), Div(), Pow()
maximum, minimum, where = Maximum(), Minimum(), Where()
neg, square, sqrt, exp, log, abs = Neg(), Square(), Sqrt(), Exp(), Log(), Abs()
tanh, sigmoid, softplus, relu = Tanh(), Sigmoid(), Softplus(), Relu()
matmul, dot = Matmul(), Dot()


def leaky_relu(x, negative_slope=0.01): return LeakyRelu(negative_slope)(x)
def gelu(x, approximate=False): return Gelu(approximate)(x)
def sum(x, axis=None, keepdims=False): return Sum(axis, keepdims)(x)  # noqa: A001
def mean(x, axis=None, keepdims=False): return Mean(axis, keepdims)(x)
def max(x, axis=None, keepdims=False): return Max(axis, keepdims)(x)  # noqa: A001
def logsumexp(x, axis=None, keepdims=False): return Logsumexp(axis, keepdims)(x)
def softmax(x, axis=-1): return Softmax(axis)(x)
def log_softmax(x, axis=-1): return LogSoftmax(axis)(x)
def reshape(x, shape): return Reshape(shape)(x)
def transpose(x, axes=None): return Transpose(axes)(x)
def broadcast_to(x, shape): return BroadcastTo(shape)(x)
def concat(xs, axis=0): return Concat(axis)(*xs)
def stack(xs, axis=0): return Stack(axis)(*xs)
def take(x, indices, axis=0): return Take(axis)(x, indices)
def conv2d(x, w, stride=1, padding=0): return Conv2d(stride, padding)(x, w)
def max_pool2d(x, kernel_size, stride=None, padding=0): return MaxPool2d(kernel_size, stride, padding)(x)
def avg_pool2d(x, kernel_size, stride=None, padding=0): return AvgPool2d(kernel_size, stride, padding)(x)
def dropout(x, key, rate=0.5): return Dropout(rate)(x, key)
def layer_norm(x, eps=1e-5): return LayerNorm(eps)(x)


def scan(cell, carry, xs):
    """cell(*xs[t], *carry) along axis 0 of each of `xs`; see Scan. `carry` and `xs`
    are sequences of nodes or arrays."""
    carry, xs = tuple(carry), tuple(xs)
    loop = Scan(cell, len(xs), len(carry))
    return loop(*xs, *carry, *loop.cell_params)


def getitem(x, key):
    """x[key]; a node as the key is an integer-array lookup along axis 0 (`take`)."""
    if isinstance(key, Node):
        return take(x, key)
    template, positions, single = _split_key(key)
    return Getitem(template, single)(x, positions)
