"""Derivatives of derivatives and forward mode from zkynet's own rules (zkynet.grad, jvp,
hvp, hessian): checked against jax.hessian, jax.jvp, jax.jvp of jax.grad and finite
differences, on graphs of every operator family with broadcasting, while JAX's autodiff
is made to fail (JAX computes the references before or after, never during).

The comparisons run in float64 (jax.enable_x64), where zkynet and JAX agree to rounding:
in float32 a layer norm's Hessian already differs by 0.2% from rounding alone.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zkynet
from tests.autodiff_guard import refuse_jax_autodiff
from tests.framework.higher_order_cases import KINKED, SMOOTH, STEPS, J, Z, inputs, program
from tests.framework.ops.second_order import UNOPTIMIZED
from zkynet.framework import op

RTOL, ATOL = 1e-9, 1e-10  # float64
FAMILIES = {
    "elementwise": [n for n in SMOOTH if list(SMOOTH).index(n) < list(SMOOTH).index("softmax_last")],
    "reductions": ["softmax_last", "softmax_first", "log_softmax", "logsumexp", "logsumexp_all", "layer_norm"]
    + ["sum_mean"],
    "linalg": ["matmul", "matvec", "vecmat", "matmul_batch", "matmul_gram"],
    "shapes": ["reshape", "transpose", "broadcast_to", "concat", "stack", "pad"],
    "indexing": [n for n in SMOOTH if n.startswith(("getitem", "take", "scatter"))],
    "kinked": list(KINKED),
}


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def close(ours, reference):
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(reference), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL)


def test_the_families_cover_every_step():
    assert sorted(n for names in FAMILIES.values() for n in names) == sorted(STEPS)


# ----------------------------------------------------------------------------- composition


def cube(x):
    return x * x * x


def test_grad_of_grad_is_the_second_derivative():
    assert zkynet.grad(zkynet.grad(cube))(2.0) == 12.0  # the seed's gradfn gave 6
    assert zkynet.grad(zkynet.grad(zkynet.grad(cube)))(2.0) == 6.0  # third order
    assert zkynet.grad(zkynet.grad(zkynet.grad(zkynet.grad(cube))))(2.0) == 0.0  # fourth: a constant's
    assert zkynet.grad(zkynet.grad(lambda x: x**3))(2.0) == 12.0  # through pow
    value, slope = zkynet.value_and_grad(zkynet.grad(cube))(2.0)
    assert (value, slope) == (12.0, 12.0)


def test_jvp_of_grad_and_grad_of_jvp():
    out, tangent = zkynet.jvp(zkynet.grad(cube), (2.0,), (1.0,))
    assert (float(out), float(tangent)) == (12.0, 12.0)
    out, tangent = zkynet.jvp(zkynet.grad(cube), (2.0,), (0.5,))
    assert float(tangent) == 6.0  # linear in the tangent
    assert zkynet.grad(lambda x: zkynet.jvp(cube, (x,), (1.0,))[1])(2.0) == 12.0
    # forward over forward: the second derivative by two jvps
    assert zkynet.jvp(lambda x: zkynet.jvp(cube, (x,), (1.0,))[1], (2.0,), (1.0,))[1] == 12.0


def test_mixed_partials_and_several_arguments():
    def f(x, y):
        return x * x * y + op.tanh(y)

    d_dy = zkynet.grad(f, argnums=1)
    assert zkynet.grad(d_dy, argnums=0)(2.0, 3.0) == pytest.approx(4.0)  # d2/dxdy x^2 y = 2x
    dx, dy = zkynet.grad(zkynet.grad(f), argnums=(0, 1))(2.0, 3.0)  # d/dx: 2xy
    assert (float(dx), float(dy)) == (6.0, 4.0)


def test_an_inner_derivative_closing_over_the_outer_argument():
    """No perturbation confusion: the inner transform's result depends on the outer x
    (which it never receives as an argument), and the outer derivative sees that."""
    assert zkynet.grad(lambda x: zkynet.grad(lambda y: x * y)(1.0))(1.0) == 1.0
    assert zkynet.grad(lambda x: x * zkynet.grad(lambda y: x + y)(1.0))(1.0) == 1.0
    assert zkynet.grad(lambda x: zkynet.jvp(lambda y: x * y * y, (3.0,), (1.0,))[1])(2.0) == 6.0
    assert zkynet.grad(lambda x: zkynet.hvp(lambda y: x * y * y * y, (1.0,), (1.0,)))(2.0) == 6.0
    # the inner argument is the outer node itself, and the inner function closes over b = 2x,
    # computed from it before: d/da (a b) is b, not b + 2a (JAX: 2.0)
    assert zkynet.grad(lambda x: (lambda b: zkynet.grad(lambda a: a * b)(x))(x * 2))(3.0) == 2.0


def test_hessian_and_hvp_of_a_vector_function():
    x = np.array([1.0, -2.0, 0.5])

    def f(x):
        return op.sum(x * x * x) + op.sum(x) * op.sum(x)

    expected = np.diag(6 * x) + 2
    np.testing.assert_allclose(zkynet.hessian(f)(x), expected)
    v = np.array([1.0, 0.0, -1.0])
    np.testing.assert_allclose(zkynet.hvp(f, (x,), (v,)), expected @ v)


def test_through_a_module_inside_the_function():
    """A module called on nodes inside a transform: the input gradient of an MLP, differentiated again."""
    from zkynet.models.fcn import MLP

    model = MLP([3, 5, 1], activation="tanh", key=0)
    for p in model.named_parameters().values():
        p.value = p.value.astype(jnp.float64)
    params = {n: p.value for n, p in model.named_parameters().items()}

    def reference(x):
        h = jnp.tanh(x @ params["layers.0/W"] + params["layers.0/b"])
        return jnp.sum(h @ params["layers.1/W"] + params["layers.1/b"])

    x = np.array([[0.3, -1.2, 0.7]])
    expected = jax.jit(jax.hessian(reference))(x)  # one program, not one per kernel
    with refuse_jax_autodiff():
        ours = zkynet.hessian(lambda x: op.sum(model(x).root))(x)
    close(ours, expected)


# ----------------------------------------------------------------------------- every operator family against JAX


def references(names, args, tangents):
    fj = program(J, names)
    blocks = jax.hessian(fj, (0, 1, 2))(*args)  # all three at once, a smaller program: block i, i is jax.hessian(fj, i)
    return dict(
        hessians=[blocks[i][i] for i in range(3)],
        jvp=jax.jvp(fj, args, tangents),
        hvp=jax.jvp(jax.grad(fj, argnums=(0, 1, 2)), args, tangents)[1],
    )


def ours(names, args, tangents):
    fz = program(Z, names)
    return dict(
        hessians=[zkynet.hessian(fz, i)(*args) for i in range(3)],
        jvp=zkynet.jvp(fz, args, tangents),
        hvp=zkynet.hvp(fz, args, tangents),
    )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_against_jax(family):
    """Each family's steps chained into one graph (x (3, 4) with y (4,) and z (3, 1)
    broadcast against it): Hessians for every argument, a jvp, a Hessian-vector product,
    compiled (each side is one jit: eager, every small kernel would compile on its own;
    eager second order is checked by the random graphs below)."""
    names = FAMILIES[family]
    args, tangents = inputs(0, np.float64), inputs(1, np.float64)
    expected = jax.jit(lambda a, t: references(names, a, t), compiler_options=UNOPTIMIZED)(args, tangents)
    with refuse_jax_autodiff():
        got = jax.jit(lambda a, t: ours(names, a, t), compiler_options=UNOPTIMIZED)(args, tangents)
    close(got, expected)


@functools.cache
def compiled_reference(names):
    """jax.jvp and jax.jvp(jax.grad) of the chain `names`, one compiled program per chain
    (run eagerly, each of JAX's small kernels would compile on its own)."""
    fj = program(J, names)
    return jax.jit(
        lambda a, t: (jax.jvp(fj, a, t), jax.jvp(jax.grad(fj, argnums=(0, 1, 2)), a, t)[1]),
        compiler_options=UNOPTIMIZED,
    )


@settings(max_examples=12, deadline=None)
@given(names=st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_random_graphs_against_jax(names, seed):
    """Random chains of steps from every family, random inputs: jvp and Hessian-vector
    products against jax.jvp and jax.jvp(jax.grad) (compiled; zkynet's side runs eagerly)."""
    with jax.enable_x64(True):  # hypothesis runs the body outside the function fixture
        args, tangents = inputs(seed, np.float64), inputs(seed + 1, np.float64)
        expected = compiled_reference(tuple(names))(args, tangents)
        fz = program(Z, names)
        with refuse_jax_autodiff():
            got = zkynet.jvp(fz, args, tangents), zkynet.hvp(fz, args, tangents)
        close(got, expected)


@settings(max_examples=10, deadline=None)
@given(names=st.lists(st.sampled_from(sorted(SMOOTH)), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_random_graphs_against_finite_differences(names, seed):
    """No JAX at all: the Hessian-vector product against central differences of zkynet's
    own first-order gradient, the jvp against central differences of f."""
    with jax.enable_x64(True), refuse_jax_autodiff():
        args, tangents = inputs(seed, np.float64), inputs(seed + 1, np.float64)
        fz = program(Z, names)
        gradient = zkynet.grad(fz, argnums=(0, 1, 2))
        eps = 1e-5

        def moved(sign):
            return [a + sign * eps * t for a, t in zip(args, tangents, strict=True)]

        hvp = zkynet.hvp(fz, args, tangents)
        differences = [(p - m) / (2 * eps) for p, m in zip(gradient(*moved(1)), gradient(*moved(-1)), strict=True)]
        for a, b in zip(hvp, differences, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * (1 + np.abs(b).max()))
        value, tangent = zkynet.jvp(fz, args, tangents)
        slope = (fz(*moved(1)).value - fz(*moved(-1)).value) / (2 * eps)
        np.testing.assert_allclose(tangent, slope, rtol=1e-5, atol=1e-6)
        assert float(value) == pytest.approx(float(fz(*args).value))


# ----------------------------------------------------------------------------- compiled


def test_second_order_under_jit_matches_eager():
    names = ["matmul", "softmax_last", "getitem_int_arrays", "pow_both"]
    fz = program(Z, names)
    args, tangents = inputs(3, np.float64), inputs(4, np.float64)
    eager = zkynet.hvp(fz, args, tangents), zkynet.jvp(fz, args, tangents)[1]
    with refuse_jax_autodiff():
        compiled = jax.jit(lambda a, t: (zkynet.hvp(fz, a, t), zkynet.jvp(fz, a, t)[1]))(args, tangents)
        second = jax.jit(zkynet.grad(zkynet.grad(cube)))(2.0)
    close(compiled, eager)
    assert second == 12.0
    close(compiled[0], compiled_reference(tuple(names))(args, tangents)[1])  # jax.jvp(jax.grad(...))


def test_vmap_of_a_second_derivative():
    xs = np.linspace(-1.0, 2.0, 5)
    with refuse_jax_autodiff():
        second = jax.vmap(zkynet.grad(zkynet.grad(lambda x: x * x * x * x)))(xs)
    np.testing.assert_allclose(second, 12 * xs**2)
