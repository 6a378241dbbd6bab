"""zkynet's derivatives are its own: no JAX autodiff inside the package (tests may
use it as the reference)."""
import re
from pathlib import Path

import zkynet

NAMES = r"(grad|value_and_grad|vjp|jvp|jacrev|jacfwd|hessian|linearize|custom_vjp|custom_jvp|linear_transpose)"
ATTRIBUTE = re.compile(rf"\bjax(\.\w+)*\.{NAMES}\b")  # jax.grad, jax.experimental.jvp, ...
IMPORT = re.compile(rf"^\s*from jax(\.\w+)* import .*\b{NAMES}\b")


def autodiff_uses(source):
    return [line.strip() for line in source.splitlines()
            if ATTRIBUTE.search(line.split("#")[0]) or IMPORT.search(line.split("#")[0])]


def test_the_check_catches_autodiff_and_nothing_else():
    assert autodiff_uses("g = jax.grad(f)(x)\nfrom jax import vjp\ny = jax.experimental.jvp(f)")  == [
        "g = jax.grad(f)(x)", "from jax import vjp", "y = jax.experimental.jvp(f)"]
    assert autodiff_uses("def vjp(self, g, out, x): return (g * jax.nn.sigmoid(x),)\n"
                         "rows = jax.vmap(pull)(basis)  # not jax.grad") == []


def test_package_never_calls_jax_autodiff():
    offenders = [f"{path.name}: {line}" for path in Path(zkynet.__file__).parent.rglob("*.py")
                 for line in autodiff_uses(path.read_text())]
    assert not offenders, "JAX autodiff used inside zkynet:\n" + "\n".join(offenders)
