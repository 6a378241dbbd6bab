"""The fused LSTM update (zkynet/framework/ops/cells.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet.framework import cg, op
from zkynet.gradcheck import check_gradients


def _lstm_update_reference(gates, c):
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jnp.concatenate([jax.nn.sigmoid(o) * jnp.tanh(c), c], axis=-1)


@pytest.mark.parametrize(
    "shapes", [[(3, 8), (3, 2)], [(2, 3, 12), (2, 1, 3)], [(3, 8), (2, 1, 2)], [(8,), (2,)]], ids=str
)
def test_lstm_update_against_jax_and_finite_differences(shapes):
    """op.lstm_update's fused backward, batched, with the cell state broadcast against
    the gates both ways."""
    rng = np.random.default_rng(len(shapes[0]))
    gates, c = (rng.normal(size=s) * 2 for s in shapes)
    report = check_gradients(op.lstm_update, _lstm_update_reference, [gates, c])
    assert report.inputs == ["gates", "c"]


def test_lstm_update_float32_matches_the_textbook_formula_and_reads_no_output():
    """Its sigmoids come from one tanh over the gates: in float32 the state agrees with
    sigmoid/tanh evaluated separately to rounding, saturated gates included; its vjp
    does not read its output (a loop need not keep it)."""
    gates = jnp.asarray(np.random.default_rng(0).normal(size=(64, 4 * 16)) * 10, jnp.float32)
    c = jnp.asarray(np.random.default_rng(1).normal(size=(64, 16)), jnp.float32)
    got = op.lstm_update(gates, c)
    np.testing.assert_allclose(got.value, _lstm_update_reference(gates, c), rtol=1e-6, atol=3e-7)
    leaves = [cg.InputNode(v, cg.Variable(n)) for v, n in ((gates, "gates"), (c, "c"))]
    for leaf in leaves:
        leaf.requires_grad = True
    g = jnp.ones(got.shape, jnp.float32)
    expected = op.LSTMUpdate().vjp(g, got.value, *leaves)
    for a, b in zip(op.LSTMUpdate().vjp(g, jnp.full(got.shape, 7.0), *leaves), expected, strict=True):
        np.testing.assert_array_equal(a, b)
