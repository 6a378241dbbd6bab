"""A five-minute tour of the zkynet core: `python -m zkynet.demo [output folder]`.

Builds the seed document's SimpleModel, prints values, gradients and a
Jacobian (checked against the calculus), and draws the four composite models' graphs.
"""

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from zkynet.framework import op
from zkynet.models import toy
from zkynet.visual import plot_cg


def main(out_dir="outputs/demo"):
    out = Path(out_dir)
    m = toy.SimpleModel()
    result = m(3)
    print("f(x) = (x + w) * x^2 with w = 1")
    print(f"  f(3)        = {result.value}")
    result.back()
    print(f"  df/dw at 3  = {result.grad(m.param('w'))}")
    print(f"  df/dx at 3  = {result.grad(m.input('x'))}")

    x = jnp.array([3.0, 4.0, 5.0])
    result = m(x)
    result.back()
    jacobian = result.grad(m.input("x"))
    by_hand = jnp.diag(3 * x**2 + 2 * x)  # d/dx (x + 1) x^2, elementwise: a diagonal Jacobian
    print(
        f"  f([3, 4, 5]) = {np.asarray(result.value)}; df/dx is the 3x3 Jacobian\n"
        f"{np.asarray(jacobian)}\n  equal to the calculus (3x^2 + 2x on the diagonal): "
        f"{bool(jnp.allclose(jacobian, by_hand))}"
    )

    print(f"\ngraph pictures in {out}/:")
    print("  ", plot_cg(m(3).root, save_path=str(out / "simple_model.png"), title="SimpleModel"))
    for name in (
        "CompositeModel_NoWeightSharing_DifferentInputs",
        "CompositeModel_WeightSharing_DifferentInputs",
        "CompositeModel_NoWeightSharing_SameInputs",
        "CompositeModel_WeightSharing_SameInputs",
    ):
        model = getattr(toy, name)()
        graph = model(*[3] * len(model.inputs))
        print("  ", plot_cg(graph.root, save_path=str(out / f"{name}.png"), title=name))

    z = op.softmax(jnp.array([1e4, 0.0, -1e4]))
    print(f"\nsoftmax of logits (1e4, 0, -1e4), computed in log space: {np.asarray(z.value)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
