"""The autodiff core: `cg` (graphs, modules, back()) and `op` (operators)."""

from zkynet.framework import computation_graph as cg
from zkynet.framework import operations as op

__all__ = ["cg", "op"]
