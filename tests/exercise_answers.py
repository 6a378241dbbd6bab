"""The answers to notebooks/11_exercises.ipynb (kept out of the notebook), and plausible
wrong answers that the checks must catch. Each class is named as in the notebook, so
its source can stand in for the learner's cell (tests/test_exercises.py)."""

import jax.numpy as jnp

from zkynet.framework import cg, op

# ---------------------------------------------------------------- the right answers


class Softplus(cg.Operator):
    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"),))

    def call(self, x):
        return jnp.logaddexp(x.value, 0.0)

    def _gradfn(self, inpt):
        def _x_grad(x):
            return 1 / (1 + jnp.exp(-x.value))

        return _x_grad


class LayerNorm(cg.Operator):
    def __init__(self, eps=1e-5):
        super().__init__(inputs=(cg.Variable("x"),))
        self.eps = eps

    def call(self, x):
        centred = x.value - x.value.mean(axis=-1, keepdims=True)
        return centred / jnp.sqrt((centred**2).mean(axis=-1, keepdims=True) + self.eps)

    def vjp(self, g, out, x):
        centred = x.value - x.value.mean(axis=-1, keepdims=True)
        s = jnp.sqrt((centred**2).mean(axis=-1, keepdims=True) + self.eps)
        return ((g - g.mean(axis=-1, keepdims=True) - out * (g * out).mean(axis=-1, keepdims=True)) / s,)


class Conv1d(cg.Operator):
    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"), cg.Variable("w")))

    def call(self, x, w):
        k = w.shape[0]
        return jnp.stack([jnp.dot(x.value[i : i + k], w.value) for i in range(x.shape[0] - k + 1)])

    def vjp(self, g, out, x, w):
        k = w.shape[0]
        dx = jnp.zeros(x.shape, g.dtype)
        for i in range(g.shape[0]):
            dx = dx.at[i : i + k].add(g[i] * w.value)
        dw = jnp.stack([jnp.dot(g, x.value[j : j + g.shape[0]]) for j in range(k)])
        return dx, dw


class ResidualBlock(cg.Module):
    def __init__(self, dim):
        super().__init__(
            inputs=(cg.Variable("x"),),
            params=(cg.Parameter("W", jnp.eye(dim) * 0.5), cg.Parameter("b", jnp.full((dim,), 0.1))),
        )

    def call(self, x):
        return x + op.tanh(x @ self.param("W") + self.param("b"))


class SoftmaxCrossEntropy(cg.Operator):
    def __init__(self):
        super().__init__(inputs=(cg.Variable("logits"), cg.Variable("labels")))

    def call(self, logits, labels):
        shifted = logits.value - logits.value.max(axis=1, keepdims=True)
        log_p = shifted - jnp.log(jnp.exp(shifted).sum(axis=1, keepdims=True))
        return -jnp.mean(jnp.take_along_axis(log_p, labels.value[:, None], axis=1))

    def vjp(self, g, out, logits, labels):
        shifted = logits.value - logits.value.max(axis=1, keepdims=True)
        p = jnp.exp(shifted) / jnp.exp(shifted).sum(axis=1, keepdims=True)
        one_hot = jnp.eye(logits.shape[1], dtype=p.dtype)[labels.value]
        return g * (p - one_hot) / logits.shape[0], None


RIGHT = {
    "softplus": Softplus,
    "layer_norm": LayerNorm,
    "conv1d": Conv1d,
    "residual_block": ResidualBlock,
    "cross_entropy": SoftmaxCrossEntropy,
}

# ---------------------------------------------------------------- plausible mistakes


class SoftplusSignSlip(Softplus):
    """exp(x) instead of exp(-x) in the sigmoid: 1 - sigmoid(x)."""

    def _gradfn(self, inpt):
        return lambda x: 1 / (1 + jnp.exp(x.value))


class SoftplusWrongForward(Softplus):
    """log(exp(x)) = x: forgot the 1 +."""

    def call(self, x):
        return x.value


class LayerNormElementwise(LayerNorm):
    """The derivative as if each element were normalized alone: 1 / s."""

    def vjp(self, g, out, x):
        centred = x.value - x.value.mean(axis=-1, keepdims=True)
        return (g / jnp.sqrt((centred**2).mean(axis=-1, keepdims=True) + self.eps),)


class Conv1dFlippedKernelGradient(Conv1d):
    """dw reversed (a convolution where a correlation is needed)."""

    def vjp(self, g, out, x, w):
        dx, dw = super().vjp(g, out, x, w)
        return dx, dw[::-1]


class Conv1dShortCotangent(Conv1d):
    """dx of the output's length instead of x's."""

    def vjp(self, g, out, x, w):
        dx, dw = super().vjp(g, out, x, w)
        return dx[: g.shape[0]], dw


class ResidualBlockNoSkip(ResidualBlock):
    def call(self, x):
        return op.tanh(x @ self.param("W") + self.param("b"))


class ResidualBlockMissingBias(cg.Module):
    def __init__(self, dim):
        super().__init__(inputs=(cg.Variable("x"),), params=(cg.Parameter("W", jnp.eye(dim)),))

    def call(self, x):
        return x + op.tanh(x @ self.param("W"))


class CrossEntropyNoShift(SoftmaxCrossEntropy):
    """Right gradient, but exp(1000) overflows."""

    def call(self, logits, labels):
        log_p = logits.value - jnp.log(jnp.exp(logits.value).sum(axis=1, keepdims=True))
        return -jnp.mean(jnp.take_along_axis(log_p, labels.value[:, None], axis=1))


class CrossEntropyNotAveraged(SoftmaxCrossEntropy):
    """The gradient of the sum, not of the mean."""

    def vjp(self, g, out, logits, labels):
        (dlogits, _) = super().vjp(g, out, logits, labels)
        return dlogits * logits.shape[0], None


WRONG = {  # exercise -> mistakes, and a piece of what the verdict must say about each
    "softplus": [(SoftplusSignSlip, "gradient with respect to x"), (SoftplusWrongForward, "forward pass (call)")],
    "layer_norm": [(LayerNormElementwise, "gradient with respect to x")],
    "conv1d": [(Conv1dFlippedKernelGradient, "gradient with respect to w"), (Conv1dShortCotangent, "shape")],
    "residual_block": [(ResidualBlockNoSkip, "forward pass (call)"), (ResidualBlockMissingBias, "parameters")],
    "cross_entropy": [(CrossEntropyNoShift, "overflows"), (CrossEntropyNotAveraged, "gradient with respect to logits")],
}
