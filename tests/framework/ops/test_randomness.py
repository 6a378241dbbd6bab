"""Dropout (zkynet/framework/ops/randomness.py)."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from tests.framework.ops.strategies import examples, seeds
from zkynet.framework import op
from zkynet.gradcheck import check_gradients


@examples
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=5), rate=st.sampled_from([0.0, 0.1, 0.5, 0.9]), seed=seeds)
def test_dropout(shape, rate, seed):
    key = jax.random.PRNGKey(seed % 1000)

    def reference(x):
        keep = jax.random.bernoulli(key, 1 - rate, x.shape)
        return jnp.where(keep, x / (1 - rate), 0)

    check_gradients(
        lambda x: op.dropout(x, key, rate), reference, [np.random.default_rng(seed).normal(size=shape)], seed
    )


def test_dropout_keeps_about_one_minus_rate_and_depends_on_key():
    x = jnp.ones((100, 100))
    a = op.dropout(x, jax.random.PRNGKey(0), 0.3).value
    b = op.dropout(x, jax.random.PRNGKey(1), 0.3).value
    assert abs(float((a != 0).mean()) - 0.7) < 0.02
    np.testing.assert_allclose(a[a != 0], 1 / 0.7, rtol=1e-6)
    assert (a != b).any()
