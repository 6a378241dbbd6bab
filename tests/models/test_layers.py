"""Layers (zkynet/models/layers.py): LayerNorm's gradients, Embedding's lookups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet.framework.errors import IndexOutOfRangeError
from zkynet.gradcheck import check_gradients


def _layer_norm_reference(eps):
    def reference(x):
        centered = x - jnp.mean(x, axis=-1, keepdims=True)
        return centered / jnp.sqrt(jnp.mean(centered**2, axis=-1, keepdims=True) + eps)

    return reference


@pytest.mark.parametrize("shape", [(2, 3, 4), (4,)], ids=str)
def test_layer_norm_module_with_broadcast_scale_and_shift(shape):
    """zkynet.models.layers.LayerNorm: the operator, then (dim,) parameters broadcast
    over the batch dims; gradients for the input and both parameters."""
    from zkynet.models.layers import LayerNorm

    module = LayerNorm(shape[-1])
    rng = np.random.default_rng(1)
    module.param("scale").value = rng.normal(size=shape[-1]).astype(np.float32)
    module.param("shift").value = rng.normal(size=shape[-1]).astype(np.float32)

    def reference(params, x):
        return _layer_norm_reference(module.eps)(x) * params["scale"] + params["shift"]

    report = check_gradients(module, reference, [rng.normal(size=shape)], seed=1)
    assert report.inputs == ["x", "param 'scale'", "param 'shift'"]


def test_an_embedding_lookup_of_a_token_beyond_the_vocabulary():
    from zkynet.models.layers import Embedding

    with pytest.raises(IndexOutOfRangeError, match=r"Embedding/take: index 16 .*axis 0 of size 16"):
        Embedding(16, 4)(jnp.array([[1, 16]]))
    looked_up = jax.jit(lambda t: Embedding(16, 4)(t).value)(jnp.array([[1, 16]]))  # traced: NaN row
    assert np.isfinite(looked_up[0, 0]).all() and np.isnan(looked_up[0, 1]).all()
