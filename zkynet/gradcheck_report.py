"""What a gradient check reports (zkynet.gradcheck): GradientCheckError when a backward
rule disagrees with finite differences or the reference, naming the function, the input,
the check, the worst element and both values there; a GradientReport of how close every
comparison came when all pass."""

from dataclasses import dataclass, field


class GradientCheckError(AssertionError):
    """A backward rule disagrees with finite differences or the reference.

    Attributes: function, input (its name), check (what was compared), index (of the
    worst element, a tuple; None for a directional check), ours, expected (the values
    there), tolerance, mismatches (how many elements are out of tolerance) of total,
    context (the inputs' and output's dtypes and shapes, the seed)."""

    def __init__(
        self,
        function: str,
        input: str,
        check: str,
        index: tuple[int, ...] | None,
        ours: float,
        expected: float,
        tolerance: float,
        mismatches: int,
        total: int,
        context: str,
    ):
        self.function, self.input, self.check, self.index = function, input, check, index
        self.ours, self.expected, self.tolerance, self.mismatches = ours, expected, tolerance, mismatches
        self.total, self.context = total, context
        where = f"{input}[{', '.join(map(str, index))}]" if index else input
        super().__init__(
            f"{function}: d/d{input}: {check} at {where}: ours {ours:.10g}, expected {expected:.10g} "
            f"(|difference| {abs(ours - expected):.3g} > tolerance {tolerance:.3g}); {mismatches} of {total} "
            f"element(s) out of tolerance. {context}"
        )


@dataclass
class GradientReport:
    """What check_gradients compared, and how close each comparison came: for each
    check, the worst |difference| / tolerance (at most 1 when it passed)."""

    function: str
    inputs: list[str]
    worst: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        checks = "; ".join(f"{name}: {ratio:.2g}" for name, ratio in self.worst.items())
        return f"{self.function} passed, wrt {', '.join(self.inputs)} (worst error / tolerance: {checks})"
