"""Initializers: reproducible from a seed, with the variance each promises."""

import jax
import numpy as np
import pytest

from zkynet import init
from zkynet.models.cnn import LeNet
from zkynet.models.fcn import MLP


def test_same_seed_same_values_and_different_seed_differs():
    a = init.he_normal(0, (64, 32))
    np.testing.assert_array_equal(a, init.he_normal(jax.random.PRNGKey(0), (64, 32)))
    assert not np.array_equal(a, init.he_normal(1, (64, 32)))


@pytest.mark.parametrize(
    "name, shape, variance",
    [
        ("he_normal", (400, 300), 2 / 400),
        ("he_uniform", (400, 300), 2 / 400),
        ("glorot_normal", (400, 300), 2 / 700),
        ("glorot_uniform", (400, 300), 2 / 700),
        ("he_normal", (64, 16, 3, 3), 2 / (16 * 9)),  # conv kernel (out, in, kh, kw)
    ],
)
def test_variances(name, shape, variance):
    values = np.asarray(init.get(name)(0, shape))
    assert values.var() == pytest.approx(variance, rel=0.05)
    assert abs(values.mean()) < 0.01


def test_fans_and_errors():
    assert init.fans((3, 5)) == (3, 5)
    assert init.fans((8, 4, 3, 3)) == (36, 72)
    with pytest.raises(ValueError, match="rank >= 2"):
        init.fans((3,))
    with pytest.raises(ValueError, match="unknown initializer 'kaiming'"):
        init.get("kaiming")


def test_models_from_the_same_seed_are_identical():
    for build in (lambda k: MLP([8, 16, 4], key=k), lambda k: LeNet((1, 8, 8), channels=(4,), hidden=(), key=k)):
        first, second, other = build(3), build(3), build(4)
        for name, p in first.named_parameters().items():
            np.testing.assert_array_equal(p.value, second.named_parameters()[name].value)
        assert any(
            not np.array_equal(p.value, other.named_parameters()[n].value) for n, p in first.named_parameters().items()
        )
