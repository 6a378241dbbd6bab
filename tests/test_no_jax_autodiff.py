"""zkynet's derivatives are its own: no JAX autodiff inside the package (tests may
use it as the reference)."""
import ast
from pathlib import Path

import zkynet

AUTODIFF = {"grad", "value_and_grad", "vjp", "jvp", "jacrev", "jacfwd", "hessian", "linearize",
            "custom_vjp", "custom_jvp", "linear_transpose"}


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
        "from jax import vjp", "jax.experimental.jvp", "jax.grad"]
    assert autodiff_uses('def vjp(self, g, out, x):\n    return (g * jax.nn.sigmoid(x),)\n'
                         'rows = jax.vmap(pull)(basis)  # not jax.grad\n"""never jax.grad"""') == []


def test_package_never_calls_jax_autodiff():
    offenders = [f"{path.relative_to(Path(zkynet.__file__).parent)}: {use}"
                 for path in Path(zkynet.__file__).parent.rglob("*.py")
                 for use in autodiff_uses(path.read_text())]
    assert not offenders, "JAX autodiff used inside zkynet:\n" + "\n".join(offenders)
