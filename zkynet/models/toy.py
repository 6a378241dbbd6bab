"""The seed document's proof-of-concept model and its four compositions
(weights shared or not, inputs shared or not): small graphs to learn from."""

from zkynet.framework import cg, op


class SimpleModel(cg.Module):
    """f(x, w) = (x + w) * x^2, where x is an input and w is a parameter."""

    def __init__(self, w0=1):
        super().__init__(inputs=(cg.Variable("x"),), params=(cg.Parameter("w", w0),))

    def call(self, x):
        a = op.add(x, self.param("w"))
        b = op.square(x)
        return op.mult(a, b)


class CompositeModel_NoWeightSharing_DifferentInputs(cg.Module):
    """m1(x1) + m2(x2): two SimpleModels, each with its own w and input."""

    def __init__(self):
        super().__init__(inputs=(cg.Variable("x1"), cg.Variable("x2")))
        self._m1 = SimpleModel()
        self._m2 = SimpleModel()

    def call(self, x1, x2):
        return op.add(self._m1(x1), self._m2(x2))


class CompositeModel_WeightSharing_DifferentInputs(cg.Module):
    """m1(x1) + m1(x2): one SimpleModel (one w) applied to two inputs."""

    def __init__(self):
        super().__init__(inputs=(cg.Variable("x1"), cg.Variable("x2")))
        self._m1 = SimpleModel(w0=2)

    def call(self, x1, x2):
        return op.add(self._m1(x1), self._m1(x2))


class CompositeModel_NoWeightSharing_SameInputs(cg.Module):
    """m1(x1) + m2(x1): two SimpleModels reading the same input."""

    def __init__(self):
        super().__init__(inputs=(cg.Variable("x1"),))
        self._m1 = SimpleModel()
        self._m2 = SimpleModel()

    def call(self, x1):
        return op.add(self._m1(x1), self._m2(x1))


class CompositeModel_WeightSharing_SameInputs(cg.Module):
    """m1(x1) + m1(x1): the same model applied twice to the same input."""

    def __init__(self):
        super().__init__(inputs=(cg.Variable("x1"),))
        self._m1 = SimpleModel()

    def call(self, x1):
        return op.add(self._m1(x1), self._m1(x1))
