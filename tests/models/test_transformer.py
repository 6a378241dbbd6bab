"""Transformer semantics: attention against a JAX reference, causal and padding
masks, positions, sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet.models.transformer import (
    MultiHeadAttention,
    TransformerClassifier,
    TransformerLM,
    generate,
    sinusoidal_positions,
)

rng = np.random.default_rng(0)


def test_attention_matches_a_jax_reference_with_gradients():
    attention = MultiHeadAttention(8, heads=2, key=0)
    x = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
    mask = jnp.tril(jnp.ones((5, 5), bool))

    def reference(params, x):
        qkv = (x @ params["qkv/W"] + params["qkv/b"]).reshape(2, 5, 3, 2, 4)
        q, k, v = (jnp.swapaxes(qkv[:, :, i], 1, 2) for i in range(3))
        scores = jnp.where(mask, q @ jnp.swapaxes(k, -1, -2) / 2.0, -1e9)
        out = jnp.swapaxes(jax.nn.softmax(scores) @ v, 1, 2).reshape(2, 5, 8)
        return out @ params["out/W"] + params["out/b"]

    params = {n: p.value for n, p in attention.named_parameters().items()}
    result = attention(x, mask)
    np.testing.assert_allclose(result.value, reference(params, x), rtol=1e-5, atol=1e-6)
    cotangent = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
    result.back(cotangent)
    expected = jax.vjp(reference, params, x)[1](cotangent)
    np.testing.assert_allclose(result.grad(attention.input("x")), expected[1], rtol=1e-4, atol=1e-6)
    for name, p in attention.named_parameters().items():
        np.testing.assert_allclose(result.grad(p), expected[0][name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_language_model_is_causal(positions):
    model = TransformerLM(12, dim=16, heads=2, layers=2, mlp=32, max_length=10, positions=positions, key=1)
    tokens = jnp.asarray(rng.integers(2, 12, size=(2, 10)), jnp.int32)
    changed = tokens.at[:, 6:].set(3)
    before, after = model(tokens).value, model(changed).value
    np.testing.assert_allclose(before[:, :6], after[:, :6], rtol=1e-5, atol=1e-6)  # the past ignores the future
    assert not np.allclose(before[:, 6:], after[:, 6:])


def test_classifier_ignores_padding():
    model = TransformerClassifier(12, 3, dim=16, heads=2, layers=2, mlp=32, max_length=12, key=2)
    short = jnp.array([[5, 6, 7, 0, 0]])
    longer = jnp.array([[5, 6, 7, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(model(short).value, model(longer).value, rtol=1e-5, atol=1e-6)
    assert not np.allclose(model(short).value, model(jnp.array([[5, 6, 8, 0, 0]])).value)


def test_sinusoidal_positions():
    table = np.asarray(sinusoidal_positions(50, 8))
    np.testing.assert_allclose(table[0, 0::2], 0.0, atol=1e-7)
    np.testing.assert_allclose(table[0, 1::2], 1.0)
    np.testing.assert_allclose(table[7, 0], np.sin(7.0), rtol=1e-6)


def test_generation_greedy_and_sampled():
    model = TransformerLM(12, dim=16, heads=2, layers=1, mlp=32, max_length=6, key=3)
    prompt = jnp.array([[2, 3, 4]])
    greedy = generate(model, prompt, 7)  # longer than max_length: a sliding window
    assert greedy.shape == (1, 10) and (greedy[:, :3] == prompt).all()
    np.testing.assert_array_equal(greedy, generate(model, prompt, 7))
    hot = [generate(model, prompt, 7, temperature=5.0, key=jax.random.PRNGKey(k)) for k in (0, 0, 1)]
    np.testing.assert_array_equal(hot[0], hot[1])
    assert not np.array_equal(hot[0], hot[2])
    with pytest.raises(ValueError, match="needs a PRNG key"):
        generate(model, prompt, 3, temperature=1.0)


def test_too_long_and_bad_settings():
    model = TransformerLM(12, dim=16, heads=2, layers=1, mlp=32, max_length=4)
    with pytest.raises(ValueError, match="longer than max_length=4"):
        model(jnp.ones((1, 5), jnp.int32))
    with pytest.raises(ValueError, match="divisible by the 3 heads"):
        MultiHeadAttention(16, heads=3)
    with pytest.raises(ValueError, match="'sinusoidal' or 'learned'"):
        TransformerLM(12, positions="rotary")
