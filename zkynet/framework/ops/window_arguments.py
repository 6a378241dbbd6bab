"""The arguments of the windowed operators (convolutions in convolution.py, pooling in
pooling.py) as PyTorch and lax accept them: a size per spatial axis given as one int or
one per axis, padding as ints, (low, high) pairs, 'valid' or 'same', and the extent of a
dilated kernel. Each helper raises ValueError, which the operators turn into ShapeError
naming themselves."""

import numbers


def _pair(v, what):
    return _tuple(v, 2, what)


def _tuple(v, n, what):
    """`v` (an int, or a sequence of `n` ints) as a tuple of `n` ints."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return (int(v),) * n
    if (
        isinstance(v, (tuple, list))
        and len(v) == n
        and all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in v)
    ):
        return tuple(int(i) for i in v)
    raise ValueError(f"{what} must be an int or {n} ints, got {v!r}")


def _padding(padding, size, kernel, stride):
    """Explicit (low, high) padding per spatial axis from an int, one int per axis, explicit
    pairs, 'valid' or 'same' (output size = ceil(input / stride), as TensorFlow; `kernel`
    is the dilated kernel's size)."""
    n = len(size)
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return ((0, 0),) * n
        if padding.lower() != "same":
            raise ValueError(f"padding must be 'same', 'valid', an int or pairs, got {padding!r}")
        pads = []
        for m, k, s in zip(size, kernel, stride, strict=True):
            total = max((-(-m // s) - 1) * s + k - m, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        return ((int(padding), int(padding)),) * n
    if isinstance(padding, (tuple, list)) and len(padding) == n:
        pads = []
        for p in padding:
            if isinstance(p, numbers.Integral) and not isinstance(p, bool):
                pads.append((int(p), int(p)))
            elif isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(i, numbers.Integral) for i in p):
                pads.append((int(p[0]), int(p[1])))
            else:
                break
        else:
            return tuple(pads)
    raise ValueError(f"padding must be 'same', 'valid', an int, {n} ints or {n} (low, high) pairs, got {padding!r}")


def _dilated(size, dilation):
    """The extent of `size` elements spread `dilation` apart: (size - 1) * dilation + 1."""
    return 0 if size == 0 else (size - 1) * dilation + 1
