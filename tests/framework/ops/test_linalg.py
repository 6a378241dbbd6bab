"""Matrix products (zkynet/framework/ops/linalg.py)."""

import jax.numpy as jnp
import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

from tests.framework.ops.strategies import examples, seeds
from zkynet.framework import op
from zkynet.gradcheck import check_gradients


@st.composite
def matmul_shapes(draw):
    batch = draw(mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3)).input_shapes
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    a = (k,) if draw(st.integers(0, 4)) == 0 else batch[0] + (m, k)
    b = (k,) if draw(st.integers(0, 4)) == 0 else batch[1] + (k, n)
    return a, b


@examples
@given(shapes=matmul_shapes(), seed=seeds)
@example(shapes=((2, 1, 3, 4), (5, 4, 2)), seed=0)  # batch dims broadcast both ways
@example(shapes=((2, 3, 4), (4, 5)), seed=1)  # a batch against one matrix
@example(shapes=((4,), (2, 4, 3)), seed=2)  # a vector against a batch
@example(shapes=((2, 3, 4), (4,)), seed=3)
def test_matmul(shapes, seed):
    rng = np.random.default_rng(seed)
    check_gradients(op.matmul, jnp.matmul, [rng.normal(size=s) for s in shapes], seed)


@examples
@given(shapes=st.sampled_from([((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4))]), seed=seeds)
def test_dot(shapes, seed):
    rng = np.random.default_rng(seed)
    check_gradients(op.dot, jnp.dot, [rng.normal(size=s) for s in shapes], seed)
