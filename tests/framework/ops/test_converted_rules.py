"""The rules converted to xp run on nodes: second order through dropout, attention (its
forward rebuilds the saved probabilities as nodes), lstm_update, layer_norm and the
softmax family, against JAX's autodiff of the same functions; op.scan refuses by name,
with advice."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zkynet
from zkynet.framework import cg, op
from zkynet.models.rnn import Recurrent

from .second_order import check_second_order

KEY = jax.random.PRNGKey(3)


def _attention(q, k, v, mask=None, scale=0.5):
    scores = jnp.einsum("...qd,...kd->...qk", q, k) * scale
    if mask is not None:
        scores = jnp.where(mask, scores, -1e9)
    return jax.nn.softmax(scores, -1) @ v


def _lstm(gates, c):
    i, f, g, o = jnp.split(gates, 4, -1)
    c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jnp.concatenate([jax.nn.sigmoid(o) * jnp.tanh(c_new), c_new], -1)


MASK = np.random.default_rng(0).random((3, 4)) > 0.3

CASES = {
    "dropout": (
        lambda x: op.dropout(x, KEY, 0.4) ** 2,
        lambda x: jnp.where(jax.random.bernoulli(KEY, 0.6, x.shape), x / 0.6, 0) ** 2,
        [(3, 4)],
    ),
    "attention": (lambda q, k, v: op.attention(q, k, v, scale=0.5), _attention, [(2, 3, 4), (2, 4, 4), (2, 4, 3)]),
    "attention masked": (
        lambda q, k, v: op.attention(q, k, v, MASK, scale=0.5),
        lambda q, k, v: _attention(q, k, v, MASK),
        [(2, 3, 4), (2, 4, 4), (2, 4, 3)],
    ),
    "lstm_update": (op.lstm_update, _lstm, [(2, 8), (2, 2)]),
    "softmax": (op.softmax, jax.nn.softmax, [(3, 4)]),
    "log_softmax": (op.log_softmax, jax.nn.log_softmax, [(3, 4)]),
    "logsumexp": (lambda x: op.logsumexp(x, 1), lambda x: jax.scipy.special.logsumexp(x, 1), [(3, 4)]),
    "gelu": (op.gelu, lambda x: jax.nn.gelu(x, approximate=False), [(3, 4)]),
}


@pytest.mark.parametrize("name", CASES)
def test_second_order(name):
    fn, reference, shapes = CASES[name]
    rng = np.random.default_rng(len(name))
    check_second_order(fn, reference, [rng.normal(size=s) for s in shapes], hessian=len(shapes) == 1)


def test_scan_refuses_second_order_with_advice():
    model = Recurrent("lstm", 2, 3)
    x = jnp.ones((1, 4, 2))

    def f(x):
        return op.sum(model(x).root[0])

    zkynet.grad(f)(x)  # first order: fine
    with pytest.raises(
        cg.HigherOrderError, match=r"Scan: this operator's backward rule is not itself differentiable.*unroll=True"
    ):
        zkynet.hessian(f)(x)
    unrolled = Recurrent("lstm", 2, 3, unroll=True)
    # the advice works: compiled, as one program (eager, each of the unrolled graph's small
    # kernels compiles on its own; lstm_update's second order is checked eagerly above)
    assert jax.jit(zkynet.hessian(lambda x: op.sum(unrolled(x).root[0])))(x).shape == (1, 4, 2) * 2
