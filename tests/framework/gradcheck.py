"""Checks a zkynet function's forward and hand-written backward against JAX
(the reference) and against finite differences, in float64."""
import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework import cg

# float64 throughout: forward and reverse mode agree to ~1e-15; central
# differences with eps=1e-6 carry ~1e-9 relative error (truncation + rounding).
RTOL, ATOL = 1e-9, 1e-11
FD_EPS, FD_RTOL, FD_ATOL = 1e-6, 1e-6, 1e-8
MAX_JACOBIAN_SIZE = 4096  # elements of output.size * input.size compared in full


class Lambda(cg.Module):
    """A module whose inputs x0, x1, ... are passed to `fn`."""

    def __init__(self, fn, arity):
        super().__init__(inputs=[cg.Variable(f"x{i}") for i in range(arity)])
        self.fn = fn

    def call(self, *xs):
        return self.fn(*xs)


def check_gradients(fn, reference, args, seed, argnums=None):
    """fn: zkynet nodes -> node; reference: the same function on jnp arrays;
    argnums: which args are differentiated (default: all)."""
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        args = [jnp.asarray(a, jnp.float64) for a in args]
        argnums = range(len(args)) if argnums is None else argnums
        model = Lambda(fn, len(args))
        result = model(*args)
        expected = jax.jit(reference)(*args)
        assert result.value.shape == expected.shape, (result.value.shape, expected.shape)
        np.testing.assert_allclose(result.value, expected, rtol=RTOL, atol=ATOL, err_msg="forward")

        cotangent = jnp.asarray(rng.normal(size=expected.shape))
        result.back(cotangent)
        reference_cts = jax.jit(lambda ct, *xs: jax.vjp(reference, *xs)[1](ct))(cotangent, *args)
        grads = {i: result.grad(model.input(f"x{i}")) for i in argnums}
        for i in argnums:
            assert grads[i].shape == args[i].shape
            np.testing.assert_allclose(grads[i], reference_cts[i], rtol=RTOL, atol=ATOL,
                                       err_msg=f"vjp wrt x{i}")

        for i in argnums:  # full Jacobian from back() without a cotangent
            if expected.size * args[i].size > MAX_JACOBIAN_SIZE:
                continue
            full = model(*args)
            full.back()
            np.testing.assert_allclose(full.grad(model.input(f"x{i}")),
                                       jax.jit(jax.jacrev(reference, argnums=i))(*args),
                                       rtol=RTOL, atol=ATOL, err_msg=f"jacobian wrt x{i}")

        for i in argnums:  # directional finite difference of our own forward
            direction = jnp.asarray(rng.normal(size=args[i].shape))

            def forward_at(step):
                moved = list(args)
                moved[i] = args[i] + step * direction
                return model(*moved).value

            numeric = jnp.vdot(cotangent, forward_at(FD_EPS) - forward_at(-FD_EPS)) / (2 * FD_EPS)
            analytic = jnp.vdot(grads[i], direction)
            np.testing.assert_allclose(analytic, numeric, rtol=FD_RTOL, atol=FD_ATOL,
                                       err_msg=f"finite differences wrt x{i}")
