"""zkynet's built-in operators, by family. Each is a small Operator whose forward
(`call`) and hand-written backward (`vjp`, the vector-Jacobian product) sit side
by side; JAX is the array library here, never the differentiator. The lowercase
names (`add`, `sum`, `conv2d`, ...) are what models call; `op` re-exports them."""
from zkynet.framework.graph import define_syntax
from zkynet.framework.ops import (cells, convolution, elementwise, indexing, linalg, loops, randomness,
                                  reductions, shapes, softmax_attention)
from zkynet.framework.ops.cells import *  # noqa: F401,F403
from zkynet.framework.ops.convolution import *  # noqa: F401,F403
from zkynet.framework.ops.elementwise import *  # noqa: F401,F403
from zkynet.framework.ops.indexing import *  # noqa: F401,F403
from zkynet.framework.ops.linalg import *  # noqa: F401,F403
from zkynet.framework.ops.loops import *  # noqa: F401,F403
from zkynet.framework.ops.randomness import *  # noqa: F401,F403
from zkynet.framework.ops.reductions import *  # noqa: F401,F403
from zkynet.framework.ops.shapes import *  # noqa: F401,F403
from zkynet.framework.ops.softmax_attention import *  # noqa: F401,F403

FAMILIES = (elementwise, reductions, linalg, shapes, indexing, convolution, randomness, loops, softmax_attention, cells)
__all__: list[str] = []  # family by family, in a form type checkers follow
__all__ += elementwise.__all__
__all__ += reductions.__all__
__all__ += linalg.__all__
__all__ += shapes.__all__
__all__ += indexing.__all__
__all__ += convolution.__all__
__all__ += randomness.__all__
__all__ += loops.__all__
__all__ += softmax_attention.__all__
__all__ += cells.__all__

define_syntax(add=elementwise.add, sub=elementwise.sub, mult=elementwise.mult, div=elementwise.div,
              pow=elementwise.pow, neg=elementwise.neg, matmul=linalg.matmul,
              getitem=indexing.getitem, transpose=shapes.transpose)
