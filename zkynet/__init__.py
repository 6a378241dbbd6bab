"""zkynet: deep learning from first principles, on a graph you can read.

`from zkynet.framework import cg, op` is where every model starts.
"""
__version__ = "0.1.0"
