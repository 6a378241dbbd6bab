"""zkynet's operators, imported as ``op`` (`from zkynet.framework import op`).

This module only gathers them; they live in the ops package, one module per family:
  ops/elementwise.py  add sub mult div pow maximum minimum where, neg square sqrt exp
                      log abs sign tanh sigmoid softplus relu leaky_relu gelu sin cos erf astype
  ops/comparison.py   equal not_equal less less_equal greater greater_equal
  ops/gradient_control.py  stop_gradient
  ops/reductions.py   sum mean max min prod logsumexp, softmax log_softmax, layer_norm rms_norm
  ops/cumulative.py   cumsum
  ops/sorting.py      sort topk
  ops/linalg.py       matmul dot einsum
  ops/shapes.py       reshape transpose broadcast_to concat stack pad flip
  ops/indexing.py     getitem
  ops/gather_scatter.py  take scatter_add take_along_axis add_along_axis
  ops/convolution.py  conv_general conv1d conv2d conv3d conv_transpose1d/2d/3d
  ops/pooling.py      max_pool2d avg_pool2d
  ops/randomness.py   dropout
  ops/loops.py        scan
  ops/control_flow.py cond fori_loop while_loop
  ops/softmax_attention.py  attention
  ops/cells.py        lstm_update
Each lowercase function has its class (`op.add` is an `op.Add`), to subclass or
to configure (`op.Sum(axis=1)`). Writing your own: see cg.Operator.
`op.Multiply` is the original zkynet's name for `op.Mult` (see framework/original.py).
"""

from zkynet.framework.ops.cells import *
from zkynet.framework.ops.comparison import *
from zkynet.framework.ops.control_flow import *
from zkynet.framework.ops.convolution import *
from zkynet.framework.ops.cumulative import *
from zkynet.framework.ops.elementwise import *
from zkynet.framework.ops.gather_scatter import *
from zkynet.framework.ops.gradient_control import *
from zkynet.framework.ops.indexing import *
from zkynet.framework.ops.linalg import *
from zkynet.framework.ops.loops import *
from zkynet.framework.ops.pooling import *
from zkynet.framework.ops.randomness import *
from zkynet.framework.ops.reductions import *
from zkynet.framework.ops.shapes import *
from zkynet.framework.ops.softmax_attention import *
from zkynet.framework.ops.sorting import *
from zkynet.framework.original import Multiply as Multiply
