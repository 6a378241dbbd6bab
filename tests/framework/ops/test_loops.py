"""op.scan (zkynet/framework/ops/loops.py): its backward, a reverse scan of zkynet's own
back(), against JAX and finite differences; the operator keeps no state of its own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet.framework import cg, op
from zkynet.gradcheck import check_gradients


class _Cell(cg.Module):
    """A two-carry cell with broadcasting inside: (x_t, h, c) -> (h', c')."""

    def __init__(self, width, rng):
        super().__init__(
            inputs=(cg.Variable("x"), cg.Variable("h"), cg.Variable("c")),
            params=(
                cg.Parameter("U", rng.normal(size=(width, width)).astype(np.float32) * 0.5),
                cg.Parameter("b", rng.normal(size=(width,)).astype(np.float32)),
            ),
        )

    def call(self, x, h, c):
        c = op.tanh(c * op.sigmoid(x) + h @ self.param("U"))
        return op.tanh(c + self.param("b")) * h + x, c


def _cell_reference(params, x, h, c):
    c = jnp.tanh(c * jax.nn.sigmoid(x) + h @ params["U"])
    return jnp.tanh(c + params["b"]) * h + x, c


class _Scanned(cg.Module):
    def __init__(self, cell):
        super().__init__(inputs=(cg.Variable("xs"), cg.Variable("h0"), cg.Variable("c0")))
        self.cell = cell

    def call(self, xs, h0, c0):
        return op.scan(self.cell, [h0, c0], [xs])


def _scan_reference(params, xs, h0, c0):
    def step(carry, x):
        new = _cell_reference({k.split("/")[-1]: v for k, v in params.items()}, x, *carry)
        return new, jnp.concatenate(new, axis=-1)

    return jax.lax.scan(step, (h0, c0), xs)[1]


@pytest.mark.parametrize("steps, batch", [(3, (2,)), (1, ()), (4, (2, 1))], ids=str)
def test_scan_against_jax_and_finite_differences(steps, batch):
    """op.scan's backward (a reverse scan of zkynet's own back()): gradients of the
    stacked outputs wrt the sequence, both initial carries and the cell's parameters,
    with batch dims (the initial carry broadcast against them where its dim is 1)."""
    width, rng = 3, np.random.default_rng(steps)
    scanned = _Scanned(_Cell(width, rng))
    xs = rng.normal(size=(steps,) + batch + (width,))
    h0 = rng.normal(size=batch + (width,))
    c0 = rng.normal(size=batch + (width,))
    report = check_gradients(scanned, _scan_reference, [xs, h0, c0], seed=steps)
    assert report.inputs == ["xs", "h0", "c0", "param 'cell/U'", "param 'cell/b'"]


class _SharingCell(cg.Module):
    """U only ever on the right of matmuls, twice (its gradient is hoisted out of the
    reverse loop and sums both); V in a matmul and elementwise (stays in the loop)."""

    def __init__(self, width, rng):
        super().__init__(
            inputs=(cg.Variable("x"), cg.Variable("h")),
            params=(
                cg.Parameter("U", rng.normal(size=(width, width)).astype(np.float32) * 0.5),
                cg.Parameter("V", rng.normal(size=(width, width)).astype(np.float32) * 0.5),
            ),
        )

    def call(self, x, h):
        return op.tanh(x @ self.param("U") + h @ self.param("U") + (h @ self.param("V")) * op.mean(self.param("V")))


class _ScannedOnce(cg.Module):
    def __init__(self, cell):
        super().__init__(inputs=(cg.Variable("xs"), cg.Variable("h0")))
        self.cell = cell

    def call(self, xs, h0):
        return op.scan(self.cell, [h0], [xs])


@pytest.mark.parametrize("batch", [(), (2,), (2, 1)], ids=str)
def test_scan_hoists_only_weights_used_as_matmul_matrices(batch):
    width, rng = 3, np.random.default_rng(len(batch))

    def reference(params, xs, h0):
        U, V = params["cell/U"], params["cell/V"]

        def step(h, x):
            return (jnp.tanh(x @ U + h @ U + (h @ V) * jnp.mean(V)),) * 2

        return jax.lax.scan(step, h0, xs)[1]

    xs, h0 = rng.normal(size=(4,) + batch + (width,)), rng.normal(size=batch + (width,))
    report = check_gradients(_ScannedOnce(_SharingCell(width, rng)), reference, [xs, h0], seed=len(batch))
    assert report.inputs == ["xs", "h0", "param 'cell/U'", "param 'cell/V'"]


def test_a_scan_applied_twice_keeps_each_forward_on_its_own_node():
    class Cell(cg.Module):
        def __init__(self):
            super().__init__(
                inputs=(cg.Variable("x"), cg.Variable("h")),
                params=(cg.Parameter("U", jnp.array([[0.5, -0.3], [0.2, 0.9]])),),
            )

        def call(self, x, h):
            return op.tanh(x + h @ self.param("U"))

    cell = Cell()
    loop = op.Scan(cell, n_xs=1, n_carry=1)
    state = dict(vars(loop))

    class Twice(cg.Module):
        def __init__(self):
            super().__init__(inputs=(cg.Variable("a"), cg.Variable("b")))
            self.cell = cell

        def call(self, a, b):
            h0 = jnp.zeros((1, 2))
            return op.sum(loop(a, h0, cell.param("U")) * loop(b, h0, cell.param("U")))

    def reference(a, b, U):
        def run(xs):
            return jax.lax.scan(lambda h, x: (jnp.tanh(x + h @ U),) * 2, jnp.zeros((1, 2)), xs)[1]

        return jnp.sum(run(a) * run(b))

    a = jnp.linspace(-1, 1, 8).reshape(4, 1, 2)
    b = jnp.linspace(2, -1, 8).reshape(4, 1, 2)
    m = Twice()
    result = m(a, b)
    result.back()
    expected = jax.grad(reference, argnums=(0, 1, 2))(a, b, cell.param("U").value)
    for got, want in zip(
        [result.grad(m.input("a")), result.grad(m.input("b")), result.grad(cell.param("U"))], expected, strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert vars(loop) == state  # the operator itself was never written to
