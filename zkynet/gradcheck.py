"""Check hand-written backward rules: an operator's, a module's, or any function of
zkynet nodes, against central finite differences in float64 and, when you pass one,
against a reference function's VJP (`jax.vjp`).

    from zkynet.gradcheck import check_gradients, check_operator
    check_operator(Scale(3.0), reference=lambda x: 3.0 * x)   # random broadcasting shapes
    check_gradients(op.matmul, jnp.matmul, [a, b])            # given inputs
    check_gradients(model, args=[x])                          # a module: its inputs and parameters

What is compared, element by element (the worst element is reported):
  forward   the output against the reference's output;
  vjp       back(cotangent) for a random cotangent (the path training uses), against
            the reference's VJP and against the finite-difference VJP;
  jacobian  back() without a cotangent (the full Jacobian, another code path: our
            backprop under vmap and jit), against finite differences and the
            reference's Jacobian, while output.size * input.size <= max_jacobian
            (bigger inputs get finite differences along random directions instead).
A mismatch raises GradientCheckError (an AssertionError) naming the function, the
input, the check, the index and both values. Success returns a GradientReport.

Tolerances: our rules against a reference VJP agree to rounding (rtol=1e-9,
atol=1e-11 in float64). Central differences with step h = eps * max(1, |x|)
(eps=1e-6) carry a truncation error ~h^2 f'''/6 and a rounding error ~2u|f|/h
(u = 2**-53); the tolerance is fd_atol + fd_rtol * |expected| plus that rounding
bound, computed from the function's own values, so large outputs do not fail
spuriously. Finite differences assume the function is smooth at the inputs: keep
them away from kinks (relu at 0, ties of max).

JAX's autodiff is applied only to the reference function you pass; zkynet's own
derivatives never use it.

GradientCheckError and GradientReport are defined in gradcheck_report.py, the random
inputs (normal, positive, broadcasting_shapes) in gradcheck_inputs.py; import them from
here, as before.
"""

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zkynet.framework.errors import GradientError, UnregisteredParameterError
from zkynet.framework.graph import OperatorNode
from zkynet.framework.module import Module, call_module
from zkynet.framework.operator import Operator
from zkynet.framework.templates import Variable
from zkynet.gradcheck_inputs import broadcasting_shapes, normal, positive
from zkynet.gradcheck_report import GradientCheckError, GradientReport

__all__ = [
    "GradientCheckError",
    "GradientReport",
    "check_gradients",
    "check_operator",
    "broadcasting_shapes",
    "normal",
    "positive",
]

RTOL, ATOL = 1e-9, 1e-11
EPS, FD_RTOL, FD_ATOL = 1e-6, 1e-6, 1e-8
MAX_JACOBIAN = 4096  # output.size * input.size compared element by element
DIRECTIONS = 3  # random directions for finite differences of inputs too big for the full Jacobian
_U = np.finfo(np.float64).eps / 2  # unit roundoff of float64


class _Apply(Module):
    """A module applying one operator (or function of nodes) to its inputs."""

    def __init__(self, fn: Callable[..., Any], names: Sequence[str], name: str):
        super().__init__(inputs=[Variable(n) for n in names], name=name)
        self.fn = fn

    def call(self, *xs: Any) -> Any:
        return self.fn(*xs)


def _names(fn: Any, count: int) -> list[str]:
    if isinstance(fn, Operator) and not fn.variadic:
        return [v.short_name for v in fn.inputs]
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    if len(parameters) == count and all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters):
        return [p.name for p in parameters]
    return [f"x{i}" for i in range(count)]


def _as64(value: Any) -> Any:
    array = np.asarray(value)
    return jnp.asarray(array, jnp.float64) if array.dtype.kind == "f" else jnp.asarray(array)


def check_gradients(
    fn: Any,
    reference: Callable[..., Any] | None = None,
    args: Sequence[Any] = (),
    seed: int = 0,
    argnums: Sequence[int] | None = None,
    *,
    params: bool = True,
    name: str | None = None,
    eps: float = EPS,
    rtol: float = RTOL,
    atol: float = ATOL,
    fd_rtol: float = FD_RTOL,
    fd_atol: float = FD_ATOL,
    max_jacobian: int = MAX_JACOBIAN,
) -> GradientReport:
    """Check `fn`'s backward rules at `args`; raise GradientCheckError on a mismatch.

    fn: an Operator (applied to args), a Module (called on args; with `params`, its
        parameters are checked too), or a function of nodes returning a node (it may
        not use parameters: pass their module instead).
    reference: the same function on jnp arrays, optional; for a Module,
        ``reference(params, *args)`` with params {name: value} as named_parameters()
        names them.
    args: the input values (converted to float64; integer ones stay integers and are
        never differentiated).
    argnums: the args to differentiate (default: every floating one).
    seed: for the random cotangent and directions.
    The module docstring explains the checks and tolerances."""
    with jax.enable_x64(True):
        return _check(
            fn,
            reference,
            [_as64(a) for a in args],
            seed,
            argnums,
            params,
            name,
            dict(eps=eps, rtol=rtol, atol=atol, fd_rtol=fd_rtol, fd_atol=fd_atol, max_jacobian=max_jacobian),
        )


def _check(fn, reference, args, seed, argnums, with_params, name, tol):
    rng = np.random.default_rng(seed)
    if argnums is None:
        argnums = [i for i, a in enumerate(args) if jnp.issubdtype(a.dtype, jnp.floating)]
    argnums = list(argnums)
    module = fn if isinstance(fn, Module) else _Apply(fn, _names(fn, len(args)), _fn_name(fn))
    params = module.named_parameters() if isinstance(fn, Module) and with_params else {}
    param_values = {
        n: jnp.asarray(p.value, jnp.float64) if jnp.issubdtype(p.value.dtype, jnp.floating) else p.value
        for n, p in params.items()
    }
    param_names = [  # frozen parameters and state get no gradient: not checked
        n for n, v in param_values.items() if jnp.issubdtype(v.dtype, jnp.floating) and params[n].trainable
    ]
    frozen = {params[n]: v for n, v in param_values.items()}
    labels = [module.inputs[i].short_name for i in argnums] + [f"param {n!r}" for n in param_names]
    start = [args[i] for i in argnums] + [param_values[n] for n in param_names]

    def graph_at(values):
        full = list(args)
        for k, i in enumerate(argnums):
            full[i] = values[k]
        substituted = dict(frozen)
        substituted.update({params[n]: v for n, v in zip(param_names, values[len(argnums) :], strict=True)})
        try:
            return call_module(module, full, param_values=substituted)
        except UnregisteredParameterError as e:
            raise TypeError(
                f"check_gradients: the function uses parameters of a module it does not own; pass "
                f"that module to check_gradients instead ({e})"
            ) from e

    def grads_of(graph):
        found = []
        for i in argnums:
            try:
                found.append(graph.grad(module.inputs[i]))
            except GradientError:  # the function ignores this input: its gradient is zero
                found.append(jnp.zeros_like(args[i]))
        for n in param_names:
            p = params[n]
            found.append(graph.grad(p) if graph.uses(p) else jnp.zeros_like(param_values[n]))
        return found

    graph = graph_at(start)  # eager: each operator's fused forward and backward
    if isinstance(graph.root, tuple):
        raise TypeError("check_gradients: the function must return one node; check one output at a time")
    out = graph.value
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"check_gradients: the output is {out.dtype}; only floating outputs have gradients")
    if name is None:
        name = _graph_name(fn, graph)
    inputs_text = ", ".join(f"{label} {v.dtype}{list(v.shape)}" for label, v in zip(labels, start, strict=True))
    context = f"Inputs: {inputs_text}; output {out.dtype}{list(out.shape)}; seed {seed}."

    def fail(label, check, ours, expected, tolerance, index=None, mismatches=1, total=1):
        raise GradientCheckError(
            name, label, check, index, float(ours), float(expected), float(tolerance), mismatches, total, context
        )

    report = GradientReport(name, labels)

    def compare(label, check, ours, expected, rtol, atol, noise=0.0, index_shape=None):
        ours, expected = np.asarray(ours, np.float64), np.asarray(expected, np.float64)
        noise = np.asarray(noise, np.float64)  # all NumPy: an eager jnp op compiles once per shape
        if ours.shape != expected.shape:
            raise GradientCheckError(
                name,
                label,
                f"{check}: shape {ours.shape}, expected {expected.shape}",
                None,
                math.nan,
                math.nan,
                0.0,
                1,
                1,
                context,
            )
        tolerance = atol + rtol * np.abs(expected) + noise
        both_nan = np.isnan(ours) & np.isnan(expected)
        error = np.where(both_nan, 0.0, np.abs(ours - expected))
        ratio = np.where(np.isnan(error), np.inf, error / tolerance)
        worst = float(ratio.max()) if ratio.size else 0.0
        report.worst[f"{label}: {check}"] = worst
        if worst > 1:
            at = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            fail(
                label,
                check,
                ours[at],
                expected[at],
                np.broadcast_to(tolerance, ratio.shape)[at],
                tuple(int(i) for i in at),
                int((ratio > 1).sum()),
                ratio.size,
            )

    cotangent = rng.normal(size=out.shape)  # NumPy on the host: eager jnp here would compile per shape
    graph.back(jax.device_put(cotangent))
    ours_vjp = grads_of(graph)
    for label, g, x in zip(labels, ours_vjp, start, strict=True):
        if g.shape != x.shape:
            fail(label, f"vjp shape {tuple(g.shape)} is not the input's {tuple(x.shape)}", math.nan, math.nan, 0)

    full = [i for i, x in enumerate(start) if out.size * x.size <= tol["max_jacobian"]]
    directions = {
        i: [rng.normal(size=x.shape) for _ in range(DIRECTIONS)] for i, x in enumerate(start) if i not in full
    }
    steps = [tol["eps"] * np.maximum(1.0, np.abs(np.asarray(x))) for x in start]

    def forward(values):
        return graph_at(values).value

    def numeric(values):
        """Finite-difference Jacobians (with their rounding bound) for `full`, directional
        derivatives of <cotangent, f> for the rest, and our own Jacobians for `full`."""
        jacobians, noises, directional, ours = {}, {}, {}, {}
        for i in full:
            x, h = values[i], steps[i]
            basis = (jnp.eye(x.size, dtype=x.dtype) * h.reshape(-1)).reshape((x.size,) + x.shape)

            def moved(d, i=i):
                return forward(values[:i] + [values[i] + d] + values[i + 1 :])

            plus, minus = jax.vmap(moved)(basis), jax.vmap(moved)(-basis)
            scale = 2 * h.reshape((-1,) + (1,) * out.ndim)
            rows = (plus - minus) / scale  # (x.size, *out.shape)
            noise = 2 * _U * (jnp.abs(plus) + jnp.abs(minus)) / scale
            jacobians[i] = jnp.moveaxis(rows, 0, -1).reshape(out.shape + x.shape)
            noises[i] = jnp.moveaxis(noise, 0, -1).reshape(out.shape + x.shape)
        for i, ds in directions.items():
            h = tol["eps"]
            found = []
            for d in ds:
                plus = forward(values[:i] + [values[i] + h * d] + values[i + 1 :])
                minus = forward(values[:i] + [values[i] - h * d] + values[i + 1 :])
                found.append(
                    (
                        jnp.vdot(cotangent, plus - minus) / (2 * h),
                        2 * _U * jnp.vdot(jnp.abs(cotangent), jnp.abs(plus) + jnp.abs(minus)) / (2 * h),
                    )
                )
            directional[i] = found
        if full:
            whole = graph_at(values)
            whole.back()
            grads = grads_of(whole)
            ours = {i: grads[i] for i in full}
        return jacobians, noises, directional, ours

    referenced = (
        None
        if reference is None
        else _reference_parts(reference, fn, args, argnums, param_names, param_values, full, out)
    )

    def everything(values):  # one compiled program: one compilation per check, not two
        return numeric(values), None if referenced is None else referenced(values, cotangent)

    (jacobians, noises, directional, ours_jacobians), references = jax.jit(everything)(start)

    if reference is not None:
        ref_out, ref_vjp, ref_jac = references
        compare("output", "forward vs reference", out, ref_out, tol["rtol"], tol["atol"])
        for k, label in enumerate(labels):
            compare(label, "vjp (back(cotangent)) vs reference vjp", ours_vjp[k], ref_vjp[k], tol["rtol"], tol["atol"])
    for k, label in enumerate(labels):
        if k in jacobians:
            fd_vjp = np.tensordot(cotangent, np.asarray(jacobians[k]), axes=out.ndim)
            fd_noise = np.tensordot(np.abs(cotangent), np.asarray(noises[k]), axes=out.ndim)
            compare(
                label,
                "vjp (back(cotangent)) vs finite differences",
                ours_vjp[k],
                fd_vjp,
                tol["fd_rtol"],
                tol["fd_atol"],
                fd_noise,
            )
            compare(
                label,
                "jacobian (back()) vs finite differences",
                ours_jacobians[k],
                jacobians[k],
                tol["fd_rtol"],
                tol["fd_atol"],
                noises[k],
            )
            if reference is not None:
                compare(
                    label,
                    "jacobian (back()) vs reference jacobian",
                    ours_jacobians[k],
                    ref_jac[k],
                    tol["rtol"],
                    tol["atol"],
                )
        else:
            for d, (value, noise) in zip(directions[k], directional[k], strict=True):
                analytic = np.vdot(np.asarray(ours_vjp[k]), d)
                compare(
                    label,
                    "vjp (back(cotangent)) vs finite differences along a random direction",
                    analytic,
                    value,
                    tol["fd_rtol"],
                    tol["fd_atol"],
                    noise,
                )
    return report


def _reference_parts(reference, fn, args, argnums, param_names, param_values, full, out):
    """A function of (differentiated values, cotangent): the reference's output, its VJP,
    and its Jacobians for the inputs in `full`."""
    is_module = isinstance(fn, Module)

    def at(*values):
        arguments = list(args)
        for k, i in enumerate(argnums):
            arguments[i] = values[k]
        if is_module:
            named = dict(param_values)
            named.update(zip(param_names, values[len(argnums) :], strict=True))
            return reference(named, *arguments)
        return reference(*arguments)

    def parts(values, cotangent):
        value, pull = jax.vjp(at, *values)  # autodiff of the reference only
        jacobians = {}
        if full:
            basis = jnp.eye(out.size, dtype=value.dtype).reshape((out.size,) + out.shape)
            rows = jax.vmap(pull)(basis)
            jacobians = {i: rows[i].reshape(out.shape + values[i].shape) for i in full}
        return value, pull(jnp.asarray(cotangent, value.dtype)), jacobians

    return parts


def _fn_name(fn: Any) -> str:
    if isinstance(fn, Operator):
        return fn.functional_name
    return getattr(fn, "__name__", type(fn).__name__)


def _graph_name(fn: Any, graph: Any) -> str:
    """What to call `fn` in reports: its name, or for a lambda the operators it applies."""
    if isinstance(fn, (Operator, Module)):
        return fn.functional_name
    name = getattr(fn, "__name__", "")
    if name and name != "<lambda>":
        return name
    used = list(dict.fromkeys(n.ref.functional_name for n in graph.nodes if isinstance(n, OperatorNode)))
    return f"lambda over {', '.join(used) or 'no operator'}"


def check_operator(
    operator: Any,
    reference: Callable[..., Any] | None = None,
    shapes: Sequence[Any] | None = None,
    trials: int = 3,
    seed: int = 0,
    sample: Callable[[np.random.Generator, tuple[int, ...]], Any] | Sequence[Any] = normal,
    **options: Any,
) -> list[GradientReport]:
    """check_gradients on random inputs: `trials` sets of shapes that broadcast
    together (broadcasting_shapes: equal, size-1 axes and dropped leading axes, a
    scalar, random), or the given `shapes` (one list of shapes per input, or a list of
    such lists, one per trial) for operators with shape rules of their own (matmul).
    `sample(rng, shape)` draws each input (normal; `positive` for log, sqrt, ...), or a
    list of samplers, one per input. `options` go to check_gradients. Returns the reports."""
    arity = len(operator.inputs) if isinstance(operator, Operator) and not operator.variadic else None
    if shapes is None:
        if arity is None:
            raise TypeError("check_operator: give `shapes` for a variadic operator or a function")
        plans = broadcasting_shapes(arity, trials, seed)
    elif shapes and all(isinstance(s, tuple) for s in shapes):
        plans = [list(shapes)]
    else:
        plans = [list(p) for p in shapes]
    reports = []
    for trial, plan in enumerate(plans):
        rng = np.random.default_rng([seed, trial])
        samplers: list[Any] = list(sample) if isinstance(sample, (list, tuple)) else [sample] * len(plan)
        args = [draw(rng, tuple(s)) for draw, s in zip(samplers, plan, strict=True)]
        reports.append(check_gradients(operator, reference, args, seed=seed + trial, **options))
    return reports
