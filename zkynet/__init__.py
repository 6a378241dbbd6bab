"""zkynet: deep learning from first principles, on a graph you can read.

`from zkynet.framework import cg, op` is where every model starts;
`zkynet.load(<MLflow run id or folder>)` gives a trained one back. Importing zkynet
changes no process-wide setting; `zkynet.keep_freed_memory()` is the allocator tuning
that training applies as it starts (see zkynet.framework.memory).
"""

from zkynet.framework.memory import keep_freed_memory
from zkynet.saved_model import load

__version__ = "0.1.0"
__all__ = ["keep_freed_memory", "load"]
