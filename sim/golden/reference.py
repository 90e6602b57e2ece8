"""Bit-exact numpy reference of the tile operators.

Every function works on whole frames of integer codes (numpy ``int64``) and
follows :mod:`neuflow_hdl.numerics` to the bit; the gateware must equal it on
every input.  Inputs are validated: a value outside the word range or a
configuration outside the hardware's limits raises ``ValueError``.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from neuflow_hdl.numerics import Q8_8, narrow, div_round, saturate
from neuflow_hdl.regs import AluOp, PoolMode, Symmetry

__all__ = ["conv2d", "window_max", "alu", "mapper", "pool", "output_size"]


def _words(name, x, fmt):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must hold integer codes, not {x.dtype}")
    x = x.astype(np.int64)
    if x.size and (x.min() < fmt.min or x.max() > fmt.max):
        raise ValueError(f"{name} holds values outside the {fmt.width}-bit word range")
    return x


def _check_shift(shift, fmt):
    if not 0 <= shift <= fmt.width:
        raise ValueError(f"shift must be 0 .. {fmt.width}, not {shift}")


def output_size(size, k, stride):
    """Valid-window output length along one axis."""
    if size < k:
        raise ValueError(f"image size {size} is smaller than the kernel size {k}")
    return (size - k) // stride + 1


def _windows(x, k, stride):
    if x.ndim != 2:
        raise ValueError(f"image must be 2-D (rows, columns), not {x.ndim}-D")
    output_size(x.shape[0], k, stride), output_size(x.shape[1], k, stride)
    return sliding_window_view(x, (k, k))[::stride, ::stride]


def conv2d(x, w, *, stride=1, bias=0, psum=None, shift=Q8_8.frac, fmt=Q8_8):
    """Valid 2-D convolution (correlation, as ConvNets use it) of one map.

    ``out = narrow(sum(w * window) + bias + (psum << shift), shift)``: one
    rounding per output, the partial sum aligned to the output format.

    Parameters
    ----------
    x : (H, W) codes.   w : (k, k) codes.   bias : accumulator-format integer
    (fraction bits of ``x * w``), fits in 32 bits.   psum : optional output-shaped
    codes.   shift : 0 .. width.
    """
    x = _words("image", x, fmt)
    w = _words("kernel", w, fmt)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"kernel must be square, not {w.shape}")
    _check_shift(shift, fmt)
    if not -(1 << 31) <= int(bias) < (1 << 31):
        raise ValueError(f"bias {bias} does not fit in 32 bits")
    acc = np.einsum("yxij,ij->yx", _windows(x, w.shape[0], stride), w) + int(bias)
    if psum is not None:
        psum = _words("partial sum", psum, fmt)
        if psum.shape != acc.shape:
            raise ValueError(f"partial sum shape {psum.shape} != output shape {acc.shape}")
        acc = acc + (psum << shift)
    return narrow(acc, shift, fmt.width)


def window_max(x, k, *, stride=1, fmt=Q8_8):
    """Maximum over each valid k x k window (the convolver's MAX mode)."""
    x = _words("image", x, fmt)
    return _windows(x, k, stride).max(axis=(2, 3))


def alu(op, a, b=0, *, shift=0, fmt=Q8_8):
    """Term-by-term operation; ``b`` is an array of the same shape or a constant.

    Every result is ``narrow(exact, shift)`` except DIV, which is
    ``round_half_up(a * 2**shift / b)`` saturated, with division by zero
    saturating toward the sign of ``a`` (0 / 0 = 0).
    """
    op = AluOp(op)
    a = _words("operand a", a, fmt)
    b = np.broadcast_to(_words("operand b", b, fmt), a.shape)
    _check_shift(shift, fmt)
    exact = {
        AluOp.ADD: lambda: a + b,
        AluOp.SUB: lambda: a - b,
        AluOp.MUL: lambda: a * b,
        AluOp.MAX: lambda: np.maximum(a, b),
        AluOp.MIN: lambda: np.minimum(a, b),
        AluOp.SQUARE: lambda: a * a,
        AluOp.ABS: lambda: np.abs(a),
    }
    if op is AluOp.DIV:
        return div_round(a, b, shift, fmt.width)
    return narrow(exact[op](), shift, fmt.width)


def mapper(x, bounds, slopes, offsets, *, symmetry=Symmetry.NONE, shift=Q8_8.frac, fmt=Q8_8):
    """Piecewise-linear mapping ``y = narrow(a*x + (b << shift), shift)``.

    Segment ``i`` holds ``x`` when ``i`` is the highest index with
    ``bounds[i] <= x`` (segment 0 when there is none).  With ODD or EVEN
    symmetry the segments are looked up with ``|x|`` (saturated) and, for ODD,
    the result of a negative ``x`` is negated (saturated).
    """
    x = _words("input", x, fmt)
    bounds = _words("bounds", bounds, fmt)
    slopes = _words("slopes", slopes, fmt)
    offsets = _words("offsets", offsets, fmt)
    if not (bounds.ndim == slopes.ndim == offsets.ndim == 1
            and len(bounds) == len(slopes) == len(offsets) >= 1):
        raise ValueError("bounds, slopes and offsets must be 1-D and of one length")
    _check_shift(shift, fmt)
    symmetry = Symmetry(symmetry)
    xs = x if symmetry is Symmetry.NONE else saturate(np.abs(x), fmt.width)
    above = xs[..., None] >= bounds                      # (..., N)
    n = len(bounds)
    seg = np.where(above.any(axis=-1), n - 1 - np.argmax(above[..., ::-1], axis=-1), 0)
    y = narrow(slopes[seg] * xs + (offsets[seg] << shift), shift, fmt.width)
    if symmetry is Symmetry.ODD:
        y = np.where(x < 0, saturate(-y, fmt.width), y)
    return y


def pool(x, mode, *, shift=0, fmt=Q8_8):
    """The mapper's pool stage on a mapped frame: each 2 x 2 window at stride 2
    (a last odd row or column dropped) reduced by ``mode`` (SUM: the exact sum;
    MAX: the maximum), then ``narrow(result, shift)``.  NONE returns ``x``."""
    x = _words("input", x, fmt)
    mode = PoolMode(mode)
    if mode is PoolMode.NONE:
        return x
    if x.ndim != 2 or min(x.shape) < 2:
        raise ValueError(f"a pooled frame must be 2-D with at least 2 rows and columns, not {x.shape}")
    if not 0 <= shift <= 15:
        raise ValueError(f"pool shift must be 0 .. 15, not {shift}")
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    windows = x[:h, :w].reshape(h // 2, 2, w // 2, 2)
    reduced = windows.sum(axis=(1, 3)) if mode is PoolMode.SUM else windows.max(axis=(1, 3))
    return narrow(reduced, shift, fmt.width)
