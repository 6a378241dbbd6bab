"""Reading elements by position: x[key] (getitem) and integer-array lookups (take)."""
import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework.builder import NodeLike
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Fused

__all__ = ["Getitem", "Take", "getitem", "take"]


class _Position:
    """Where an integer stood in an index key (its value is passed as an input)."""
    def __repr__(self):
        return "<int>"


_POSITION = _Position()


class Getitem(Fused):
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


class Take(Fused):
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


def take(x: NodeLike, indices: NodeLike, axis: int | None = 0) -> Node: return Take(axis)(x, indices)


def getitem(x: NodeLike, key: Any) -> Node:
    """x[key]; a node as the key is an integer-array lookup along axis 0 (`take`)."""
    if isinstance(key, Node):
        return take(x, key)
    template, positions, single = _split_key(key)
    return Getitem(template, single)(x, positions)
