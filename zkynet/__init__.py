"""zkynet: deep learning from first principles, on a graph you can read.

`from zkynet.framework import cg, op` is where every model starts;
`zkynet.load(<MLflow run id or folder>)` gives a trained one back.
"""

from zkynet.saved_model import load

__version__ = "0.1.0"
__all__ = ["load"]
