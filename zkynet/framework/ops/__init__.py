"""zkynet's built-in operators, by family. Each is a small Operator whose forward
(`call`) and hand-written backward (`vjp`, the vector-Jacobian product) sit side
by side; JAX is the array library here, never the differentiator. The lowercase
names (`add`, `sum`, `conv2d`, ...) are what models call; `op` re-exports them."""

from zkynet.framework.graph import register_operators
from zkynet.framework.ops import (
    cells,
    comparison,
    control_flow,
    convolution,
    cumulative,
    elementwise,
    gather_scatter,
    gradient_control,
    indexing,
    linalg,
    loops,
    pooling,
    randomness,
    reductions,
    shapes,
    softmax_attention,
    sorting,
)

FAMILIES = (
    elementwise,
    comparison,
    gradient_control,
    reductions,
    cumulative,
    sorting,
    linalg,
    shapes,
    indexing,
    gather_scatter,
    convolution,
    pooling,
    randomness,
    loops,
    control_flow,
    softmax_attention,
    cells,
)

# what Python's syntax on nodes (x + w, x > 0, x[0], x.T) and xp's functions on nodes
# (backward rules run on nodes for derivatives of derivatives) call: every family's
# functions, and lax.pad's general form that the rules of slices and pooling build
register_operators(
    **{name: getattr(family, name) for family in FAMILIES for name in family.__all__ if name[0].islower()},
    pad_general=shapes.pad_general,
)
