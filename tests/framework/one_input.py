"""A function as a one-input module, for tests that need a graph with paths and back()."""

from zkynet.framework import cg


class Fn(cg.Module):
    """A one-input module applying `fn` (so nodes get a path and back() can run)."""

    def __init__(self, fn, name="Fn"):
        super().__init__(inputs=(cg.Variable("x"),), name=name)
        self.fn = fn

    def call(self, x):
        return self.fn(x)


def value_and_grad(fn, x):
    m = Fn(fn)
    result = m(x)
    result.back()
    return result.value, result.grad(m.input("x"))
