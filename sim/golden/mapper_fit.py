"""Fit the piecewise-linear mapper to a function and measure its exact error.

The fit is evaluated through :func:`sim.golden.reference.mapper`, i.e. with the
quantised slopes, offsets and bounds and the hardware's rounding, on every
input code of the word format; the reported error is therefore the error the
hardware makes, not the error of an idealised float approximation.
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from neuflow_hdl.numerics import Q8_8, Format
from neuflow_hdl.regs import Symmetry
from sim.golden.reference import mapper

__all__ = ["FUNCTIONS", "MapperFit", "fit", "fit_function"]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


#: name -> (float function, symmetry the fit uses)
FUNCTIONS = {
    "tanh": (np.tanh, Symmetry.ODD),
    "sigmoid": (_sigmoid, Symmetry.NONE),
    "relu": (lambda x: np.maximum(x, 0.0), Symmetry.NONE),
    "abs": (np.abs, Symmetry.EVEN),
    "sqrt": (lambda x: np.sqrt(np.maximum(x, 0.0)), Symmetry.NONE),
    "identity": (lambda x: x, Symmetry.NONE),
}


@dataclass(frozen=True)
class MapperFit:
    """Mapper configuration for one function and its measured error."""
    function: str
    bounds: tuple
    slopes: tuple
    offsets: tuple
    symmetry: Symmetry
    shift: int
    fmt: Format
    max_error: float        #: max |mapper(x) - f(x)| over every input code, in real units

    def __call__(self, codes):
        return mapper(codes, self.bounds, self.slopes, self.offsets,
                      symmetry=self.symmetry, shift=self.shift, fmt=self.fmt)

    def config(self):
        """Field values for :func:`neuflow_hdl.regs.mapper_config_layout`."""
        return {"symmetry": self.symmetry, "shift": self.shift,
                "segments": [{"bound": b, "slope": a, "offset": c}
                             for b, a, c in zip(self.bounds, self.slopes, self.offsets)]}


def _least_squares_slope(xs, ts):
    """The slope of the least-squares line through the points ``(xs, ts)`` (0
    for fewer than two distinct ``xs``)."""
    if xs.size < 2:
        return 0.0
    dx = xs - xs.mean()
    spread = float(dx @ dx)
    return float(dx @ (ts - ts.mean())) / spread if spread > 0 else 0.0


def _segment_line(xs, ts, fmt, slope_frac):
    """A segment's line through the points ``(xs, ts)``: ``(slope code, offset
    code)``, the least-squares slope and the offset that centres the error."""
    a_code = int(fmt.quantise(_least_squares_slope(xs, ts), slope_frac))
    a_q = a_code / (1 << slope_frac)
    resid = ts - a_q * xs if xs.size else np.zeros(1)
    return a_code, int(fmt.quantise((resid.max() + resid.min()) / 2))


@lru_cache(maxsize=None)
def fit(function, segments=8, fmt=Q8_8):
    """Fit ``segments`` segments to ``function`` (a name in :data:`FUNCTIONS`).

    Returns a :class:`MapperFit` whose ``max_error`` is measured exactly.
    """
    if function not in FUNCTIONS:
        raise ValueError(f"no mapper fit for {function!r}; known: {', '.join(FUNCTIONS)}")
    f, symmetry = FUNCTIONS[function]
    return fit_function(function, f, symmetry, segments, fmt)


def fit_function(name, f, symmetry=Symmetry.NONE, segments=8, fmt=Q8_8):
    """Fit ``segments`` segments to the float function ``f`` (vectorised) over
    the whole input range of ``fmt``; ``name`` labels the result."""
    all_codes = np.arange(fmt.min, fmt.max + 1, dtype=np.int64)
    codes = all_codes if symmetry is Symmetry.NONE else all_codes[all_codes >= 0]
    target = f(codes * fmt.step)
    # The largest slope decides how many fraction bits slopes can have.
    steepest = np.max(np.abs(np.diff(target))) / fmt.step if codes.size > 1 else 1.0
    slope_frac = int(np.clip(fmt.width - 2 - np.ceil(np.log2(max(steepest, 2.0 ** -fmt.width))),
                             0, fmt.width))
    shift = slope_frac       # output format = input format

    x = codes * fmt.step
    lines = {}      # (first, end) index into codes -> its segment's line (a descent step moves one bound)

    def build(inner):
        starts = [int(codes[0])] + sorted(int(b) for b in inner)
        first = np.searchsorted(codes, starts).tolist()        # codes ascend
        slopes, offsets = [], []
        for span in zip(first, first[1:] + [len(codes)]):
            line = lines.get(span)
            if line is None:
                line = lines[span] = _segment_line(x[span[0]:span[1]], target[span[0]:span[1]], fmt,
                                                   slope_frac)
            slopes.append(line[0])
            offsets.append(line[1])
        return starts, slopes, offsets

    def error(inner, probe=all_codes):
        """(max error, sum of per-segment max errors) over ``probe`` codes; the
        second term breaks ties on the plateaus of the first."""
        starts, slopes, offsets = build(inner)
        got = mapper(probe, starts, slopes, offsets, symmetry=symmetry, shift=shift, fmt=fmt)
        err = np.abs(got * fmt.step - f(probe * fmt.step))
        key = probe if symmetry is Symmetry.NONE else np.abs(probe)
        seg = np.searchsorted(np.array(starts[1:]), key, side="right")
        per_segment = np.zeros(len(starts))
        np.maximum.at(per_segment, seg, err)
        return float(err.max()), float(per_segment.sum())

    def descend(inner, span, probe):
        best = error(inner, probe)
        step = max(span // (2 * segments), 1)
        while step >= 1:
            improved = True
            while improved:
                improved = False
                for n in range(len(inner)):
                    for delta in (-step, step):
                        trial = sorted(inner[:n] + [inner[n] + delta] + inner[n + 1:])
                        if not (lo < trial[0] and trial[-1] <= hi) or len(set(trial)) < len(trial):
                            continue
                        e = error(trial, probe)
                        if e < best:
                            best, inner, improved = e, trial, True
            step //= 2
        return inner

    # Breakpoints start spread where the function bends (several spans are
    # tried) and are refined by coordinate descent on a sample of the codes;
    # the error finally reported is measured on every code.
    lo, hi = int(codes[0]), int(codes[-1])
    probe = all_codes[::7]
    starts_tried = []
    if name == "sqrt":
        starts_tried.append(([int(v) for v in np.geomspace(1, hi, segments)[:-1]], hi))
    else:
        for reach in (3.0, 4.5, 6.0):
            span_lo, span_hi = max(lo, fmt.quantise(-reach)), min(hi, fmt.quantise(reach))
            inner = [int(v) for v in np.linspace(span_lo, span_hi, segments + 1)[1:-1]]
            starts_tried.append((inner, span_hi - span_lo))
    candidates = []
    for inner, span in starts_tried:
        inner = sorted(set(min(max(v, lo + 1), hi) for v in inner))
        candidates.append(descend(inner, span, probe))
    inner = min(candidates, key=lambda c: error(c))
    best = error(inner)[0]
    starts, slopes, offsets = build(inner)
    while len(starts) < segments:        # identical segments keep the table full
        starts.append(starts[-1]); slopes.append(slopes[-1]); offsets.append(offsets[-1])
    return MapperFit(name, tuple(starts), tuple(slopes), tuple(offsets), symmetry, shift,
                     fmt, best)
