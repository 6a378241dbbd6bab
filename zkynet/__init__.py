"""zkynet: deep learning from first principles, on a graph you can read.

`from zkynet.framework import cg, op` is where every model starts;
`zkynet.load(<MLflow run id or folder>)` gives a trained one back; `zkynet.grad`,
`jvp`, `hvp`, `hessian` are derivatives as functions, of any order (transforms.py). Importing zkynet
changes no process-wide setting; `zkynet.keep_freed_memory()` is the allocator tuning
that training applies as it starts (see zkynet.framework.memory).
"""

from zkynet.framework.memory import keep_freed_memory
from zkynet.saved_model import load
from zkynet.transforms import grad, hessian, hvp, jacobian, jvp, value_and_grad

__version__ = "0.1.0"
__all__ = ["grad", "hessian", "hvp", "jacobian", "jvp", "keep_freed_memory", "load", "value_and_grad"]
