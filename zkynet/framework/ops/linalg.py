"""Linear algebra: matmul with NumPy's rules (vectors, matrices, broadcast batches), dot."""

import jax.numpy as jnp

from zkynet.framework import xp
from zkynet.framework.ops.base import Binary

__all__ = ["Matmul", "Dot", "matmul", "dot"]


class Matmul(Binary):
    """a @ b with NumPy's rules: vectors, matrices and batches of matrices (broadcast)."""

    vjp_uses_out = False

    def call(self, a, b):
        return jnp.matmul(a.value, b.value)

    def vjp(self, g, out, a, b):
        x, y = a.value, b.value
        if x.ndim == 1 and y.ndim == 1:
            return g * y, g * x
        if x.ndim == 1:  # (k,) @ (..., k, n): treat x as (1, k)
            x, g = x[None, :], xp.expand_dims(g, -2)
        if y.ndim == 1:  # (..., m, k) @ (k,): treat y as (k, 1)
            y, g = y[:, None], xp.expand_dims(g, -1)
        da = xp.matmul(g, xp.swapaxes(y, -1, -2)) if a.requires_grad else None
        if not b.requires_grad:
            db = None
        elif y.ndim == 2 and x.ndim > 2:  # a batch against one matrix: one big matmul
            db = xp.matmul(xp.reshape(x, (-1, x.shape[-1])).T, xp.reshape(g, (-1, g.shape[-1])))
        else:
            db = xp.matmul(xp.swapaxes(x, -1, -2), g)
        if a.value.ndim == 1 and da is not None:
            da = xp.squeeze(da, -2)
        if b.value.ndim == 1 and db is not None:
            db = xp.squeeze(db, -1)
        return da, db


class Dot(Matmul):
    """Dot product of vectors / matrices (use matmul for batches)."""

    def call(self, a, b):
        if not (1 <= a.ndim <= 2 and 1 <= b.ndim <= 2):
            raise ValueError("dot takes vectors and matrices; use matmul for batched inputs")
        return jnp.matmul(a.value, b.value)


matmul, dot = Matmul(), Dot()
