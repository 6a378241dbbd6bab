"""Linear algebra: matmul with NumPy's rules (vectors, matrices, broadcast batches), dot,
einsum."""

import string
from typing import Any

import jax.numpy as jnp

from zkynet.framework import xp
from zkynet.framework.builder import NodeLike
from zkynet.framework.errors import ShapeError
from zkynet.framework.graph import Node
from zkynet.framework.ops.base import Binary, Fused

__all__ = ["Matmul", "Dot", "Einsum", "matmul", "dot", "einsum"]


class Matmul(Binary):
    """a @ b with NumPy's rules: vectors, matrices and batches of matrices (broadcast)."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
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


class Einsum(Fused):
    """jnp.einsum(spec, *operands): sums of products over named axes ("ij,jk->ik",
    "bhqd,bhkd->bhqk", "ii->i", "...ij,...jk->...ik"; without "->", NumPy's implicit output).

    The cotangent of each operand is an einsum too: g contracted with the other operands
    onto the operand's own subscripts. A letter repeated within an operand (a diagonal)
    gets an identity matrix linking its copies; a letter only that operand has (summed
    over it alone) is broadcast back; size-1 axes that broadcast are summed back by the
    graph. So the rule is Einsums again, and differentiates again the same way."""

    complex_rule = True  # JAX's convention (see Operator.complex_rule)
    vjp_uses_out = False
    variadic = True

    def __init__(self, spec):
        super().__init__()
        self.spec = spec.replace(" ", "")

    def _explicit(self, shapes):
        """([subscripts per operand], output subscripts), each a string of single letters:
        the ellipsis spelled out with letters of its own (right-aligned, as broadcasting)."""
        inputs, arrow, output = self.spec.partition("->")
        operands = inputs.split(",")
        if len(operands) != len(shapes):
            raise ShapeError(
                f"{self._where()}: the spec {self.spec!r} names {len(operands)} operand(s), got {len(shapes)}"
            )
        used = set(self.spec) - set(".,->")
        bad = sorted(c for c in used if c not in string.ascii_letters)
        if bad:
            raise ShapeError(f"{self._where()}: spec {self.spec!r}: subscripts must be letters, got {bad}")
        free = [c for c in string.ascii_letters if c not in used]
        extents = [len(shape) - len(sub.replace("...", "")) for sub, shape in zip(operands, shapes, strict=True)]
        for sub, shape, extent in zip(operands, shapes, extents, strict=True):
            if extent < 0 or (extent > 0 and "..." not in sub):
                raise ShapeError(
                    f"{self._where()}: spec {self.spec!r}: subscripts {sub!r} do not fit an operand with "
                    f"{len(shape)} axes {list(shape)}"
                )
        width = max([e for e, sub in zip(extents, operands, strict=True) if "..." in sub], default=0)
        ellipsis = "".join(free[:width])
        explicit = [
            sub.replace("...", ellipsis[width - e :] if e else "") for sub, e in zip(operands, extents, strict=True)
        ]
        if not arrow:  # NumPy's implicit output: the ellipsis, then the letters used once, sorted
            letters = "".join(explicit)
            output = ellipsis + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ellipsis))
        else:
            output = output.replace("...", ellipsis)
        return explicit, output

    def check(self, *xs):
        subs, output = self._explicit([x.shape for x in xs])
        sizes: dict[str, int] = {}
        for i, (sub, x) in enumerate(zip(subs, xs, strict=True)):
            for letter, n in zip(sub, x.shape, strict=True):
                known = sizes.setdefault(letter, n)
                if n != known and 1 not in (n, known):
                    raise ShapeError(
                        f"{self._where()}: spec {self.spec!r}: axis {letter!r} is {known} long in one operand and "
                        f"{n} in operand {i} ({x.dtype}{list(x.shape)})"
                    )
                sizes[letter] = max(n, known)
        missing = [c for c in output if c not in sizes]
        if missing or len(set(output)) != len(output):
            raise ShapeError(f"{self._where()}: spec {self.spec!r}: the output's letters must be distinct inputs' ones")

    def call(self, *xs):
        return jnp.einsum(self.spec, *[x.value for x in xs])

    def vjp(self, g, out, *xs):
        subs, output = self._explicit([x.shape for x in xs])
        used = set("".join(subs) + output)
        free = iter(c for c in string.ascii_letters if c not in used)
        cotangents: list[Any] = []
        for i, x in enumerate(xs):
            if not x.requires_grad:
                cotangents.append(None)
                continue
            operands, specs = [g], [output]
            operands += [y.value for j, y in enumerate(xs) if j != i]
            specs += [s for j, s in enumerate(subs) if j != i]
            target, seen = [], {}
            for letter, n in zip(subs[i], x.shape, strict=True):
                if letter in seen:  # a diagonal: a fresh letter, tied to the first copy by an identity
                    fresh = next(free)
                    operands.append(jnp.eye(n, dtype=g.dtype))
                    specs.append(letter + fresh)
                    letter = fresh
                seen[letter] = n
                target.append(letter)
            present = set("".join(specs))
            kept = "".join(c for c in target if c in present)  # the others were summed over x alone
            ct = xp.einsum(",".join(specs) + "->" + kept, *operands)
            if len(kept) != len(target):  # size-1 axes where those letters stand, broadcast below
                sides = dict(zip(kept, ct.shape, strict=True))
                ct = xp.reshape(ct, [sides.get(c, 1) for c in target])
            wanted = tuple(max(c, n) for c, n in zip(ct.shape, x.shape, strict=True))
            if wanted != tuple(ct.shape):
                ct = xp.broadcast_to(ct, wanted)
            spread = tuple(a for a, (c, n) in enumerate(zip(ct.shape, x.shape, strict=True)) if n == 1 != c)
            if spread:  # x's size-1 axes met another operand's longer ones: the einsum broadcast x there
                ct = xp.sum(ct, axis=spread, keepdims=True)
            cotangents.append(ct)
        return tuple(cotangents)


def einsum(spec: str, *operands: NodeLike) -> Node:
    """jnp.einsum(spec, *operands) with its own rule; see Einsum."""
    if not isinstance(spec, str):
        raise ShapeError(f"einsum takes the subscripts string first, got {type(spec).__name__}")
    return Einsum(spec)(*operands)
