"""Second-order checks shared by the operator tests: zkynet's Hessian-vector products and
Hessians, built from its own rules run on nodes, against JAX's autodiff of a jnp reference
(the reference only), in float64."""

import jax
import jax.numpy as jnp
import numpy as np

import zkynet
from zkynet.framework import op

# XLA's backend (LLVM) optimizations off for the compiled reference: about a third of its
# compile time, and nothing compared changes (the same operations in float64)
UNOPTIMIZED = {"xla_backend_optimization_level": 0}


def readout(y, c):
    """A scalar that depends on y nonlinearly: <c, y> + |y|^2 / 2 (its Hessian needs the
    operator's second derivative and its Jacobian)."""
    return op.sum(y * c) + 0.5 * op.sum(y * y)


def readout_reference(y, c):
    return jnp.sum(y * c) + 0.5 * jnp.sum(y * y)


def check_second_order(fn, reference, args, seed=0, argnums=None, hessian=True, rtol=1e-7, atol=1e-9):
    """zkynet.hvp of readout(fn(*args)) against jax.jvp(jax.grad(...)) of the reference along
    random tangents, for the args in `argnums` (default: every floating one); and, for one
    differentiated arg of at most 40 elements, zkynet.hessian against jax.hessian."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        args = [jnp.asarray(a, jnp.float64) if np.asarray(a).dtype.kind == "f" else jnp.asarray(a) for a in args]
        if argnums is None:
            argnums = [i for i, a in enumerate(args) if a.dtype.kind == "f"]
        c = jnp.asarray(rng.normal(size=jax.eval_shape(reference, *args).shape))  # traced: nothing compiles

        def at(values, f):
            full = list(args)
            for k, i in enumerate(argnums):
                full[i] = values[k]
            return f(*full)

        def ours(*values):
            return readout(at(values, fn), c)

        def theirs(*values):
            return readout_reference(at(values, reference), c)

        primals = [args[i] for i in argnums]
        tangents = [jnp.asarray(rng.normal(size=p.shape)) for p in primals]
        full_hessian = hessian and len(primals) == 1 and primals[0].size <= 40

        def references(primals, tangents):
            _, products = jax.jvp(jax.grad(theirs, tuple(range(len(primals)))), primals, tangents)
            return products, jax.hessian(theirs)(primals[0]) if full_hessian else None

        # the reference as one compiled program: run eagerly, each of its small kernels would
        # compile on its own (most of this check's time); zkynet's side stays eager
        expected, expected_hessian = jax.jit(references, compiler_options=UNOPTIMIZED)(primals, tangents)
        found = zkynet.hvp(ours, primals, tangents)
        found = found if isinstance(found, tuple) else (found,)
        for k, (a, b) in enumerate(zip(found, expected, strict=True)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=f"hvp, arg {k}")
        if full_hessian:
            h = zkynet.hessian(ours)(primals[0])
            np.testing.assert_allclose(
                np.asarray(h), np.asarray(expected_hessian), rtol=rtol, atol=atol, err_msg="hessian"
            )
