"""op.einsum: forward and hand-written rule against jnp.einsum's jax.vjp and finite
differences (matrix products, batches, diagonals, traces, ellipses that broadcast, letters
only one operand has, size-1 axes, three operands), second order, compiled, bad specs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkynet.framework import cg, op
from zkynet.gradcheck import check_gradients

from .second_order import check_second_order

CASES = [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("ij,jk", [(2, 3), (3, 4)]),  # implicit output
    ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("ii->i", [(3, 3)]),  # a diagonal
    ("ii", [(3, 3)]),  # a trace
    ("iij->j", [(2, 2, 3)]),
    ("i,i->", [(4,), (4,)]),
    ("i,j->ij", [(3,), (2,)]),  # an outer product
    ("ij->ji", [(2, 3)]),
    ("ij->", [(2, 3)]),
    ("ij,k->k", [(2, 3), (4,)]),  # i, j summed over the first operand alone
    ("...ij,jk->...ik", [(2, 3, 4), (4, 2)]),
    ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 2)]),  # ellipses that broadcast
    ("ij,ij->i", [(3, 1), (3, 4)]),  # a size-1 axis that broadcasts
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("b i j, b j k -> b i k", [(2, 2, 3), (2, 3, 2)]),  # spaces
]


@pytest.mark.parametrize("spec, shapes", CASES, ids=[c[0] for c in CASES])
def test_einsum_against_jnp(spec, shapes):
    rng = np.random.default_rng(len(spec))
    args = [rng.normal(size=s) for s in shapes]

    def fn(*xs):
        return op.einsum(spec, *xs)

    def reference(*xs):
        return jnp.einsum(spec, *xs)

    check_gradients(fn, reference, args)
    check_second_order(fn, reference, args, hessian=len(args) == 1)


@settings(max_examples=15, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_random_contractions(data, seed):
    """Random two-operand specs over letters a-e: any of them shared, summed, kept."""
    letters = "abcde"
    sizes = {c: data.draw(st.integers(1, 3)) for c in letters}
    a = "".join(data.draw(st.permutations(letters))[: data.draw(st.integers(1, 3))])
    b = "".join(data.draw(st.permutations(letters))[: data.draw(st.integers(1, 3))])
    present = sorted(set(a + b))
    out = "".join(c for c in data.draw(st.permutations(present)) if data.draw(st.booleans()))
    spec = f"{a},{b}->{out}"
    rng = np.random.default_rng(seed)
    args = [rng.normal(size=[sizes[c] for c in a]), rng.normal(size=[sizes[c] for c in b])]
    check_gradients(lambda x, y: op.einsum(spec, x, y), lambda x, y: jnp.einsum(spec, x, y), args, seed)


def test_einsum_compiled_matches_jax():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    w = cg.Parameter("w", jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), jnp.float32))

    class M(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("x"),), params=(w,))

        def call(self, x):
            return op.sum(op.tanh(op.einsum("nd,de->ne", x, self.param("w"))))

    m = M()

    @jax.jit
    def grad(value, x):
        graph = cg.call_module(m, (x,), param_values={w: value})
        graph.back()
        return graph.grad(w)

    expected = jax.grad(lambda v: jnp.sum(jnp.tanh(jnp.einsum("nd,de->ne", x, v))))(w.value)
    np.testing.assert_allclose(grad(w.value, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "spec, shapes, match",
    [
        ("ij,jk->ik", [(2, 3)], r"names 2 operand\(s\), got 1"),
        ("ij,jk->ik", [(2, 3), (4, 5)], r"axis 'j' is 3 long in one operand and 4"),
        ("ijk->i", [(2, 3)], r"subscripts 'ijk' do not fit an operand with 2 axes"),
        ("ij->iz", [(2, 3)], r"output's letters"),
        ("i1->i", [(2, 3)], r"subscripts must be letters"),
    ],
)
def test_bad_specs_are_refused(spec, shapes, match):
    with pytest.raises(cg.ShapeError, match=r"einsum: .*" + match):
        op.einsum(spec, *[jnp.ones(s) for s in shapes])
