"""Recurrent layers against plain-JAX references; scanned == unrolled; masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkynet.framework.compile import TrainStep
from zkynet.models.rnn import Recurrent

rng = np.random.default_rng(0)


def reference(cell, params, x, mask):
    """The same recurrences written directly in JAX (batch-first, masked)."""
    W, b, U = params["project/W"], params["project/b"], params["cell/U"]
    hidden = U.shape[0]
    projected = x @ W + b

    def step(state, inputs):
        p, m = inputs
        h = state[0]
        if cell == "rnn":
            new = (jnp.tanh(p + h @ U),)
        elif cell == "lstm":
            i, f, g, o = jnp.split(p + h @ U, 4, axis=-1)
            c = jax.nn.sigmoid(f) * state[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
            new = (jax.nn.sigmoid(o) * jnp.tanh(c), c)
        else:
            xr, xz, xn = jnp.split(p, 3, axis=-1)
            hr, hz, hn = jnp.split(h @ U, 3, axis=-1)
            r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * (hn + params["cell/b_n"]))
            new = ((1 - z) * n + z * h,)
        new = tuple(jnp.where(m[:, None], a, s) for a, s in zip(new, state, strict=True))
        return new, new[0]

    state = tuple(jnp.zeros((x.shape[0], hidden)) for _ in range(2 if cell == "lstm" else 1))
    final, outputs = jax.lax.scan(step, state, (jnp.swapaxes(projected, 0, 1), mask.T))
    return jnp.sum(jnp.swapaxes(outputs, 0, 1) ** 2) + sum(jnp.sum(s) for s in final)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("unroll", [False, True])
@pytest.mark.parametrize("padded", [True, False])
def test_values_and_gradients_match_jax(cell, unroll, padded):
    layer = Recurrent(cell, 5, 4, unroll=unroll, key=1)
    x = jnp.asarray(rng.normal(size=(3, 7, 5)), jnp.float32)
    lengths = np.array([[7], [4], [1]]) if padded else np.array([[7]])
    mask = jnp.asarray(np.arange(7)[None, :] < lengths)
    result = layer(x, mask) if padded else layer(x)  # no mask: the cell runs unmasked
    outputs, *final = result.roots
    cotangents = (2 * outputs.value,) + tuple(jnp.ones_like(s.value) for s in final)
    result.back(cotangents)  # = gradient of sum(outputs^2) + sum(final states)
    params = {n: p.value for n, p in layer.named_parameters().items()}
    expected = jax.grad(lambda p, x: reference(cell, p, x, mask), argnums=(0, 1))(params, x)
    np.testing.assert_allclose(result.grad(layer.input("x")), expected[1], rtol=2e-4, atol=1e-6)
    for name, p in layer.named_parameters().items():
        np.testing.assert_allclose(result.grad(p), expected[0][name], rtol=2e-4, atol=1e-6, err_msg=name)


def test_padding_leaves_the_state_alone():
    layer = Recurrent("lstm", 3, 4, key=0)
    x = jnp.asarray(rng.normal(size=(1, 6, 3)), jnp.float32)
    short = layer(x[:, :4]).value
    padded = layer(x.at[:, 4:].set(9.0), jnp.array([[1, 1, 1, 1, 0, 0]], bool)).value
    np.testing.assert_allclose(padded[1], short[1], rtol=1e-6)  # final h
    np.testing.assert_allclose(padded[2], short[2], rtol=1e-6)  # final c


def test_scanned_compile_time_does_not_grow_with_length():
    from zkynet import losses, optim
    from zkynet.models.rnn import RecurrentLM

    sizes = {}
    for steps in (8, 64):
        model = RecurrentLM(10, embed=8, hidden=16, key=0)
        step = TrainStep(model, losses.softmax_cross_entropy, optim.Adam(1e-3))
        tokens = jnp.zeros((2, steps), jnp.int32)
        text = jax.jit(step.pure).lower(step.param_values(), step.opt_state, (tokens, tokens), step.rng).as_text()
        sizes[steps] = len(text)
    assert sizes[64] < 1.05 * sizes[8]  # one scan: the program is the same size for any length


def test_unknown_cell():
    with pytest.raises(ValueError, match="unknown cell 'lstn'"):
        Recurrent("lstn", 3, 4)


def _dot_shapes(jaxpr):
    """The output shapes of the matmuls (dot_general) in `jaxpr`, nested jaxprs included."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes.append(eqn.outvars[0].aval.shape)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    shapes += _dot_shapes(inner)
    return shapes


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_reverse_loop_computes_no_weight_gradient(cell):
    """Backpropagation through time runs only the recurrent path step by step; dU is
    one matmul over all steps and the batch after the loop, not one per step. (Batch 3,
    hidden 4: a matmul shaped like U is a weight gradient.)"""
    layer = Recurrent(cell, 5, 4, key=0)
    x = jnp.asarray(rng.normal(size=(3, 6, 5)), jnp.float32)
    U = layer.cell.param("U").value

    def gradient(x):
        result = layer(x)
        result.back((result.roots[0].value,) + (None,) * (len(result.roots) - 1))
        return result.grad(layer.cell.param("U"))

    np.testing.assert_allclose(jax.jit(gradient)(x), gradient(x), rtol=1e-5, atol=1e-6)
    jaxpr = jax.make_jaxpr(gradient)(x).jaxpr
    (reverse,) = [e for e in jaxpr.eqns if e.primitive.name == "scan" and e.params["reverse"]]
    assert U.shape not in _dot_shapes(reverse.params["jaxpr"].jaxpr)
    assert U.shape in _dot_shapes(jaxpr)
