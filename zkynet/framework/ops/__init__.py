"""zkynet's built-in operators, by family. Each is a small Operator whose forward
(`call`) and hand-written backward (`vjp`, the vector-Jacobian product) sit side
by side; JAX is the array library here, never the differentiator. The lowercase
names (`add`, `sum`, `conv2d`, ...) are what models call; `op` re-exports them."""

from zkynet.framework.graph import define_syntax
from zkynet.framework.ops import elementwise, indexing, linalg, shapes

define_syntax(
    add=elementwise.add,
    sub=elementwise.sub,
    mult=elementwise.mult,
    div=elementwise.div,
    pow=elementwise.pow,
    neg=elementwise.neg,
    matmul=linalg.matmul,
    getitem=indexing.getitem,
    transpose=shapes.transpose,
)
