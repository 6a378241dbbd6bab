"""Fused attention (zkynet/framework/ops/softmax_attention.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet.framework import op
from zkynet.gradcheck import check_gradients


def _attention_reference(q, k, v, mask=None, scale=0.5):
    scores = q @ jnp.swapaxes(k, -1, -2) * scale
    return jax.nn.softmax(scores if mask is None else jnp.where(mask, scores, op.MASKED)) @ v


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("shapes", [[(2, 3, 4, 2), (2, 3, 5, 2), (2, 3, 5, 3)], [(4, 2), (1, 3, 2), (3, 2)]], ids=str)
def test_attention_against_jax_and_finite_differences(shapes, masked):
    """op.attention's fused backward, batched and broadcast, with a mask whose first
    row hides every key (uniform probabilities, no gradient to q or k there)."""
    rng = np.random.default_rng(len(shapes[0]))
    q, k, v = (rng.normal(size=s) for s in shapes)
    if not masked:
        check_gradients(lambda q, k, v: op.attention(q, k, v, scale=0.5), _attention_reference, [q, k, v])
        return
    mask = rng.uniform(size=(shapes[0][-2], shapes[1][-2])) < 0.6
    mask[0] = False
    report = check_gradients(
        lambda q, k, v, m: op.attention(q, k, v, m, scale=0.5), _attention_reference, [q, k, v, mask]
    )
    assert report.inputs == ["q", "k", "v"]
