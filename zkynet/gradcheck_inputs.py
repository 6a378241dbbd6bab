"""Random inputs for gradient checks (zkynet.gradcheck.check_operator): samplers of values
(`normal`, `positive` for log, sqrt, divisors) and sets of shapes that broadcast together
(`broadcasting_shapes`), so that a rule is checked on every broadcasting case."""

import numpy as np


def normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.normal(size=shape)


def positive(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values in [0.5, 2]: for log, sqrt, the base of pow, divisors."""
    return rng.uniform(0.5, 2.0, size=shape)


def broadcasting_shapes(
    arity: int, trials: int = 3, seed: int = 0, max_dims: int = 3, max_side: int = 3
) -> list[list[tuple[int, ...]]]:
    """`trials` lists of `arity` shapes that broadcast together: the first all equal
    (2, 3); the second each with some axes 1 and some leading axes dropped against
    (3, 2, 4); the third with one input a scalar (one of each kind when arity is 1:
    equal, a size-1 axis, a scalar); the rest random (up to max_dims, sides up to max_side)."""
    rng = np.random.default_rng(seed)
    found: list[list[tuple[int, ...]]] = []
    for trial in range(trials):
        shapes: list[tuple[int, ...]]
        full: tuple[int, ...]
        if trial == 0:
            shapes = [(2, 3)] * arity
        elif trial == 1:
            full = (3, 2, 4)
            shapes = [_reduced(full, rng) for _ in range(arity)]
            if arity > 1 and all(s == shapes[0] for s in shapes):
                shapes[0] = (1,) + full[1:]
            if arity == 1:
                shapes = [(3, 1, 4)]
        elif trial == 2:
            shapes = [(4, 1, 3)] * arity
            shapes[int(rng.integers(arity))] = ()
        else:
            full = tuple(int(n) for n in rng.integers(1, max_side + 1, size=int(rng.integers(0, max_dims + 1))))
            shapes = [_reduced(full, rng) for _ in range(arity)]
        found.append(shapes)
    return found


def _reduced(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
    """`shape` with some leading axes dropped and some sides made 1 (still broadcasts to it)."""
    kept = shape[int(rng.integers(0, len(shape) + 1)) :] if shape else ()
    return tuple(1 if rng.random() < 0.4 else n for n in kept)
