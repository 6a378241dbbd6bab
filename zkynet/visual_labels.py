"""The text plot_cg (visual.py) writes in a picture: each node's name and value, and with
show_grads its gradient below in green; a value or gradient in full when small, else as
its dtype, shape and norm (traced values have only a shape)."""

from html import escape

import numpy as np

from zkynet.framework import cg

_GRAD_FONT = "#1b7837"  # gradients (show_grads, backprop_steps) are written in green


def _label(node, gradient=None, has_gradient=False):
    """The node's name and value; with a gradient, an HTML label with it in green below."""
    if not has_gradient:
        return f"{node.name}\n{_format_value(node.value)}"
    lines = [escape(node.name), escape(_format_value(node.value))]
    return f'<{"<BR/>".join(lines)}<BR/><FONT COLOR="{_GRAD_FONT}">{escape(_format_gradient(gradient, node))}</FONT>>'


def _array(value):
    return value.value if isinstance(value, cg.Node) else value  # a gradient node (create_graph=True): its value


def _format_gradient(gradient, node):
    """'grad 33', 'grad [33, 0, 170]', 'grad float32[4, 2] norm 1.23', or for a full
    Jacobian 'jacobian float32[3, 3] norm 95.6'."""
    value = _array(gradient)
    if tuple(value.shape) != tuple(node.shape):  # output.shape + node.shape: back() of a tensor output
        return f"jacobian {value.dtype}{list(value.shape)}{_norm(value)}"
    text = _format_value(value)
    if text.startswith(str(value.dtype)):  # too big to write out: its shape, and its norm
        return f"grad {text}{_norm(value)}"
    return f"grad {_compact(text)}"


def _compact(text):
    """An array's text without NumPy's column alignment: [33., 0., 170.]."""
    return " ".join(text.split()).replace("[ ", "[")


def _norm(value):
    try:
        array = np.asarray(value, np.float64)
    except Exception:  # traced: no number to show
        return ""
    return f" norm {np.linalg.norm(array.ravel()):.4g}"


def _format_value(value):
    """Small values in full, others as dtype[shape]; traced values have only a shape."""
    kind = f"{value.dtype}{list(value.shape)}"
    if value.size > 4:
        return kind
    try:
        array = np.asarray(value)
    except Exception:  # a tracer under jit/vmap: no concrete value to show
        return kind
    with np.printoptions(precision=4, suppress=True):
        text = np.array2string(array, separator=", ") if array.ndim else f"{array.item():.6g}"
    return text if len(text) <= 40 else kind
