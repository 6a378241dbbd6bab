"""JAX's autodiff made to fail: zkynet computes its derivatives without it (tests use it
as the reference only, outside the guard). `refuse_jax_autodiff()` is a context manager
(usable inside hypothesis tests, where function fixtures are not); the `no_autodiff`
fixture (tests/conftest.py) guards a whole test."""

import contextlib
from collections.abc import Iterator

import jax
import pytest

PUBLIC = ("grad", "value_and_grad", "vjp", "jvp", "jacrev", "jacfwd", "hessian", "linearize", "linear_transpose")
# the ones every route to reverse mode goes through must exist, or the guard guards nothing
ESSENTIAL = {"jax.grad", "jax.vjp", "jax._src.interpreters.ad.backward_pass", "jax._src.interpreters.ad.jvp"}


def internal_modules():
    from jax._src import api
    from jax._src.interpreters import ad

    return [
        (jax, PUBLIC),
        (api, PUBLIC + ("_vjp", "_jvp")),
        (ad, ("vjp", "jvp", "linearize", "backward_pass", "linearize_jaxpr", "jvp_jaxpr")),
    ]


@contextlib.contextmanager
def refuse_jax_autodiff() -> Iterator[list[str]]:
    """JAX's autodiff entry points, public and internal, raise AssertionError inside the
    block; yields the names patched."""
    with pytest.MonkeyPatch.context() as patch:
        patched = []
        for module, names in internal_modules():
            for name in names:
                if hasattr(module, name):

                    def refuse(*args, _name=f"{module.__name__}.{name}", **kwargs):
                        raise AssertionError(f"JAX autodiff called: {_name}")

                    patch.setattr(module, name, refuse)
                    patched.append(f"{module.__name__}.{name}")
        assert set(patched) >= ESSENTIAL, patched
        yield patched
