"""zkynet's derivatives are its own: no JAX autodiff inside the package or the runner
(tests may use it as the reference). Checked twice: statically, in the source of
zkynet/ and experiments/, and at run time, by tracing a compiled TrainStep of every
model family while JAX's autodiff entry points are made to fail."""

import ast
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zkynet
from tests.fixtures.families import NAMES, family
from zkynet import losses, optim
from zkynet.framework import cg
from zkynet.framework.compile import TrainStep

ROOT = Path(zkynet.__file__).parents[1]
SCANNED = ("zkynet", "experiments")
AUTODIFF = {
    "grad",
    "value_and_grad",
    "vjp",
    "jvp",
    "jacrev",
    "jacfwd",
    "hessian",
    "linearize",
    "custom_vjp",
    "custom_jvp",
    "linear_transpose",
}
ALLOWED = {  # file -> the autodiff it may use, and why; anything else in it still fails
    "zkynet/gradcheck.py": {"jax.vjp"},  # the user's *reference* function, to check our rules against
    "experiments/bench/train.py": {"jax.value_and_grad"},  # the plain-JAX yardstick the benchmark times
    "experiments/bench/higher_order.py": {"jax.jvp", "jax.grad"},  # the plain-JAX Hessian-vector product
    "experiments/bench/operators.py": {"jax.value_and_grad"},  # likewise, for the new operators
}


def autodiff_uses(source):
    """Code (not comments or strings) that reaches JAX's autodiff: jax.<...>.grad or
    `from jax... import grad`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in AUTODIFF:
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id == "jax":
                found.append(ast.unparse(node))
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "jax":
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name in AUTODIFF]
    return found


def test_the_check_catches_autodiff_and_nothing_else():
    assert sorted(autodiff_uses("g = jax.grad(f)(x)\nfrom jax import vjp\ny = jax.experimental.jvp(f)")) == [
        "from jax import vjp",
        "jax.experimental.jvp",
        "jax.grad",
    ]
    assert (
        autodiff_uses(
            "def vjp(self, g, out, x):\n    return (g * jax.nn.sigmoid(x),)\n"
            'rows = jax.vmap(pull)(basis)  # not jax.grad\n"""never jax.grad"""'
        )
        == []
    )


def test_package_and_runner_never_call_jax_autodiff():
    files = [path for folder in SCANNED for path in (ROOT / folder).rglob("*.py")]
    assert any(p.parts[-2:] == ("bench", "train.py") for p in files), "experiments/ was not scanned"
    offenders = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        offenders += [
            f"{relative}: {use}" for use in autodiff_uses(path.read_text()) if use not in ALLOWED.get(relative, ())
        ]
    assert not offenders, "JAX autodiff used outside the references:\n" + "\n".join(offenders)


def test_every_allowance_is_still_needed():
    """An allowance that nothing uses any more should go (it would hide a new use)."""
    for relative, uses in ALLOWED.items():
        assert uses <= set(autodiff_uses((ROOT / relative).read_text())), relative


# ----------------------------------------------------------------------------- at run time


def test_the_guard_stops_autodiff_through_any_door(no_autodiff):
    def f(x):
        return jnp.sum(jnp.sin(x))

    x = jnp.ones(3)
    with pytest.raises(AssertionError, match="JAX autodiff called"):
        jax.grad(f)(x)
    with pytest.raises(AssertionError, match="JAX autodiff called"):
        jax.jit(lambda x: jax.value_and_grad(f)(x))(x)
    from jax._src import api  # a name imported before the test ran still goes through ad internals

    with pytest.raises(AssertionError, match="JAX autodiff called"):
        api.jacfwd(f)(x)
    assert float(jax.jit(f)(x)) == pytest.approx(3 * np.sin(1.0))  # plain JAX still works


_HIDDEN_VJP = jax.vjp  # what a rule could hold on to since import time


class _SneakyVjp(cg.Operator):
    """An operator whose backward rule secretly asks JAX: what the guard must catch."""

    input_names = ("x",)

    def call(self, x):
        return jnp.sin(x.value)

    def vjp(self, g, out, x):  # through a function object taken before the guard was set up
        return (_HIDDEN_VJP(jnp.sin, x.value)[1](g)[0],)


class _Sneaky(cg.Module):
    def __init__(self):
        super().__init__(inputs=(cg.Variable("x"),), params=(cg.Parameter("w", jnp.ones(4)),))

    def call(self, x):
        return _SneakyVjp()(x * self.param("w"))


@pytest.mark.parametrize("name", NAMES)
def test_compiled_train_step_of_every_model_family_traces_without_jax_autodiff(no_autodiff, name):
    model, loss, batch = family(name)
    step = TrainStep(model, loss, optim.Adam(1e-3))
    batch = tuple(jnp.asarray(b) for b in batch)
    traced = jax.jit(step.pure).trace(step.param_values(), step.opt_state, batch, step.rng)
    primitives = {e.primitive.name for e in traced.jaxpr.eqns}
    assert primitives, name  # it really traced a step


def test_the_runtime_guard_catches_a_rule_that_uses_jax_autodiff(no_autodiff):
    step = TrainStep(_Sneaky(), losses.mse, optim.SGD(0.1))
    batch = (jnp.ones((2, 4)), jnp.zeros((2, 4)))
    with pytest.raises(AssertionError, match=re.escape("JAX autodiff called: jax._src")):
        jax.jit(step.pure).trace(step.param_values(), step.opt_state, batch, step.rng)
