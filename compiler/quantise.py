"""Quantisation, the stage between the graph passes and lowering: a fixed-point
format per tensor, integer weights per layer, and the mapper configuration of
each activation, computed once per node (:func:`quantise`) and read by
lowering and the error bounds.

Every tensor is a stream of ``width``-bit words with ``frac`` fraction bits
(:class:`neuflow_hdl.numerics.Format`).  Without calibration data every
tensor is Q8.8 (NeuFlow's format).  With calibration inputs each tensor gets
the most fraction bits that still hold its largest calibrated magnitude with
25% headroom.  Operators that cannot change format (window max, ALU
add/sub/max/min, the mapper) tie their operands' and results' formats
together; the tied group takes the coarsest member's format.
"""

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from neuflow_hdl.numerics import Format
from neuflow_hdl.regs import Symmetry
from sim.golden.mapper_fit import fit, fit_function

from .errors import CompileError
from .ir import activation_function, as_conv

__all__ = ["alu_shift", "assign_formats", "quantise_kernel", "mapper_for", "MapperChoice", "KernelCodes",
           "NodeQuant", "Quantisation", "quantise", "float_kernel", "mapper_tolerance"]

HEADROOM = 1.25
MAX_FRAC_CALIBRATED = 12


def _frac_for(maximum, width):
    if maximum <= 0 or not np.isfinite(maximum):
        return MAX_FRAC_CALIBRATED
    integer_bits = math.ceil(math.log2(maximum * HEADROOM))
    return int(min(max(width - 1 - integer_bits, 0), MAX_FRAC_CALIBRATED))


def assign_formats(graph, fmt, maxima=None):
    """Fraction bits of every tensor: ``{tensor: frac}``.

    ``maxima``: ``{onnx tensor name: max |value|}`` from calibration, or None
    for ``fmt.frac`` everywhere.  A constant tensor gets the format its own
    values want.
    """
    tensors = [graph.input] + [n.output for n in graph.nodes]
    constants = {t: _frac_for(float(np.max(np.abs(v))), fmt.width) for t, v in graph.constants.items()}
    if maxima is None:
        return {t: fmt.frac for t in tensors} | constants
    want = {}
    for t in tensors:
        want[t] = maxima.get(t, 0.0)
    for n in graph.nodes:
        # The output of a fused operator also holds the pre-activation values.
        for name in n.onnx_outputs:
            want[n.output] = max(want[n.output], maxima.get(name, 0.0))
    want = {t: _frac_for(v, fmt.width) for t, v in want.items()}
    parent = {t: t for t in tensors}

    def find(t):
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for n in graph.nodes:
        tied = []
        if n.op == "maxpool" or (n.op == "act"):
            tied = [n.inputs[0], n.output]
        elif (n.op == "eltwise" and n.attrs["op"] in ("add", "sub", "max", "min")) or n.op == "concat":
            tied = list(n.inputs) + [n.output]
        for t in tied[1:]:
            parent[find(t)] = find(tied[0])
    group = {}
    for t in tensors:
        r = find(t)
        group[r] = min(group.get(r, 99), want[t])
    return _constants_fit(graph, {t: group[find(t)] for t in tensors} | constants, fmt)


def alu_shift(op, fa, fb, fo):
    """The StreamALU's output shift for ``a op b`` with operands of ``fa`` and
    ``fb`` fraction bits and an output of ``fo`` (0 for the operations that
    keep one format)."""
    return {"mul": fa + fb - fo, "div": fo - fa + fb}.get(op, 0)


def _constants_fit(graph, formats, fmt):
    """``formats`` with each constant operand of a product or quotient made
    coarse enough for the ALU's output shift (0 .. width) to reach the output's
    format: a constant map beside an output of few fraction bits (a tied
    concatenation) needs fewer than its values want.  Its rounding is in the
    error bound, which reads these formats."""
    formats = dict(formats)
    for n in graph.nodes:
        b = n.inputs[1] if n.op == "eltwise" and len(n.inputs) > 1 else None
        if b in graph.constants and n.attrs["op"] in ("mul", "div"):
            # The shift grows with b's fraction bits, one for one.
            top = fmt.width - alu_shift(n.attrs["op"], formats[n.inputs[0]], 0, formats[n.output])
            formats[b] = max(0, min(formats[b], top))
    return formats


def quantise_kernel(weights, fi, fo, fmt, *, node, bias=None):
    """Integer weights and bias for an operator ``out = sum(w * x) + bias``
    with input and output fraction bits ``fi`` and ``fo``.

    Chooses the weight fraction bits ``fw`` (most precision that fits the
    word) so that the output shift ``fi + fw - fo`` is within 0 .. width.
    Returns ``(codes, bias_codes, fw, shift)``; bias is in the accumulator
    format (``fi + fw`` fraction bits, 32 bits).
    """
    w = np.asarray(weights, dtype=np.float64)
    top = max(float(w.max()), -float(w.min())) if w.size else 0.0
    fw = fmt.width - 1 if top == 0 else fmt.width - 1 - math.ceil(math.log2(top * (1 + 2.0 ** -12)))
    if top and top * 2.0 ** fw >= 2 ** (fmt.width - 1) - 0.5:
        fw -= 1
    fw = min(fw, fmt.width + fo - fi)         # shift <= width
    if bias is not None and np.size(bias):
        bmax = float(np.max(np.abs(bias)))
        while bmax and fw > fo - fi and bmax * 2.0 ** (fi + fw) >= 2 ** 31 - 1:
            fw -= 1
    if fw < fo - fi:
        raise CompileError(f"weights up to {top:.4g} do not fit a {fmt.width}-bit word for "
                           f"an output with {fo} fraction bits", node)
    shift = fi + fw - fo
    codes = fmt.quantise(w, fw)
    bias_codes = None
    if bias is not None:
        bias_codes = np.floor(np.asarray(bias, dtype=np.float64) * 2.0 ** (fi + fw) + 0.5)
        if np.any(np.abs(bias_codes) >= 2 ** 31):
            raise CompileError(f"bias up to {np.max(np.abs(bias)):.4g} does not fit the 32-bit "
                               f"bias register at {fi + fw} fraction bits", node)
        bias_codes = bias_codes.astype(np.int64)
    return codes, bias_codes, fw, shift


class MapperChoice:
    """An activation on the mapper: its configuration, its exact worst-case
    error (real units) and the float function's Lipschitz constant (for error
    bounds)."""

    def __init__(self, config, max_error, lipschitz, name):
        self.config, self.max_error, self.lipschitz, self.name = config, max_error, lipschitz, name


def _exact(segments_fn, fmt, segments):
    """Mapper configuration from exact (bound, slope, offset) real-valued segments.
    A slope is one signed word with ``shift`` fraction bits: the shift is the
    largest (at most ``width - 2``) that holds every slope; a slope no shift
    holds is an error."""
    top = max(abs(slope) for _, slope, _ in segments_fn)
    shift = fmt.width - 2
    while shift > 0 and fmt.saturated(top, shift):
        shift -= 1
    if fmt.saturated(top, shift):
        raise ValueError(f"a slope of {top:g} does not fit the mapper's {fmt.width}-bit slope")
    rows = []
    for bound, slope, offset in segments_fn:
        b = fmt.min if bound is None else int(fmt.quantise(bound))
        a = int(fmt.quantise(slope, shift))
        c = int(fmt.quantise(offset))
        rows.append((b, a, c))
    rows.sort(key=lambda r: r[0])
    while len(rows) < segments:
        rows.append(rows[-1])
    if len(rows) > segments:
        raise ValueError("too many segments")
    return {"symmetry": Symmetry.NONE, "shift": shift,
            "segments": [{"bound": b, "slope": a, "offset": c} for b, a, c in rows]}


def mapper_for(act, frac, fmt, segments, *, node=None):
    """The mapper configuration of activation ``act`` on words of ``frac`` fraction bits
    (fitted once per activation and format: every layer of a network shares it)."""
    if act[0] not in ("relu", "tanh", "sigmoid", "clip", "leaky", "power"):
        raise CompileError(f"no mapper for activation {act[0]}", node)
    try:
        choice = _mapper_choice(tuple(act), frac, fmt, segments)
    except ValueError as exc:
        raise CompileError(f"activation {act[0]}: {exc}", node) from None
    tolerance = mapper_tolerance(act, Format(fmt.width, frac))
    if not choice.max_error <= tolerance:
        raise CompileError(f"activation {choice.name}: the best {segments}-segment mapper is off by "
                           f"{choice.max_error:.4g}, more than its tolerance {tolerance:.4g} (1/16 of "
                           "the function's largest value, at least 4 steps)", node)
    return choice


@lru_cache(maxsize=None)
def mapper_tolerance(act, fmt):
    """The largest error a mapper of ``act`` on words of ``fmt`` may have: 1/16 of
    the function's largest magnitude over the words (within the format's range),
    and never less than 4 steps, so a fit's error can never be as large as what
    it maps."""
    codes = np.arange(fmt.min, fmt.max + 1, dtype=np.float64) * fmt.step
    with np.errstate(all="ignore"):
        values = activation_function(act)(codes)
    low, high = fmt.dequantise(fmt.min), fmt.dequantise(fmt.max)
    values = np.clip(np.nan_to_num(values, nan=0.0, posinf=high, neginf=low), low, high)
    return max(float(np.max(np.abs(values))) / 16, 4 * fmt.step)


@lru_cache(maxsize=None)
def _mapper_choice(act, frac, fmt, segments):
    from sim.golden.reference import mapper
    f = Format(fmt.width, frac)
    kind = act[0]
    if kind in ("tanh", "sigmoid"):
        m = fit(kind, segments, f)
        return MapperChoice(m.config(), m.max_error, {"tanh": 1.0, "sigmoid": 0.25}[kind], kind)
    if kind == "clip":
        lo, hi = act[1], act[2]
        if lo > hi:         # ONNX (and numpy): min(max(x, lo), hi) is hi everywhere
            rows = [(None, 0.0, hi)]
        else:
            rows = [(None, 0.0 if np.isfinite(lo) else 1.0, lo if np.isfinite(lo) else 0.0)]
            if np.isfinite(lo):
                rows.append((lo, 1.0, 0.0))
            if np.isfinite(hi):
                rows.append((hi, 0.0, hi))
        config = _exact(rows, f, segments)
        name = f"clip({lo:g}, {hi:g})"
    elif kind in ("relu", "leaky"):        # two exact lines (ReLU: LeakyRelu of slope 0)
        slope = act[1] if kind == "leaky" else 0.0
        config = _exact([(None, slope, 0.0), (0.0, 1.0, 0.0)], f, segments)
        name = f"leaky_relu({slope:g})" if kind == "leaky" else "relu"
    elif kind == "power":
        bias, scale, exponent = act[1], act[2], act[3]
        fn = lambda x: (bias + scale * np.maximum(x, 0.0)) ** exponent
        m = fit_function(f"({bias:g}+{scale:g}x)^{exponent:g}", fn, Symmetry.NONE, segments, f)
        lip = abs(exponent) * scale * bias ** (exponent - 1) if bias > 0 else float("inf")
        return MapperChoice(m.config(), m.max_error, lip, m.function)
    else:
        raise AssertionError(kind)
    # Exact constructions: measure the error on every code like the fitter does.
    codes = np.arange(f.min, f.max + 1, dtype=np.int64)
    seg = config["segments"]
    got = mapper(codes, [s["bound"] for s in seg], [s["slope"] for s in seg],
                 [s["offset"] for s in seg], symmetry=config["symmetry"], shift=config["shift"],
                 fmt=f)
    ref = activation_function(act)(codes * f.step)
    ref = np.clip(ref, f.min * f.step, f.max * f.step)
    error = float(np.max(np.abs(got * f.step - ref)))
    lip = max(1.0, abs(slope)) if kind in ("relu", "leaky") else 1.0
    return MapperChoice(config, error, lip, name)


@dataclass(frozen=True, eq=False)
class KernelCodes:
    """A weighted node's integer weights: ``codes`` shaped like its float weights
    (``(Co, Ci/groups, kh, kw)``, or ``(N, F)`` for a fully connected layer),
    ``bias`` in the accumulator format (``fi + weight_frac`` fraction bits) and
    the output ``shift`` (``fi + weight_frac - fo``)."""
    codes: np.ndarray
    bias: tuple
    weight_frac: int
    shift: int


@dataclass(frozen=True, eq=False)
class NodeQuant:
    """What quantisation decided for one node."""
    kernel: KernelCodes = None      #: weighted nodes (conv, avgpool, affine, gemm); else None
    mapper: MapperChoice = None     #: the node's activation on the mapper, or None


@dataclass(frozen=True, eq=False)
class Quantisation:
    """The fraction bits of every tensor and the :class:`NodeQuant` of every node
    (keyed by the node's output tensor)."""
    formats: dict
    nodes: dict


def float_kernel(node, graph):
    """``(weight, bias)`` of a weighted node in float, or None."""
    if node.op == "gemm":
        return node.params["weight"], node.params["bias"]
    conv = as_conv(node, graph)
    return None if conv is None else (conv.params["weight"], conv.params["bias"])


def quantise(graph, config, maxima=None):
    """The quantisation stage: formats (:func:`assign_formats`), then each node's
    integer weights and mapper choice."""
    fmt = config.fmt
    formats = assign_formats(graph, fmt, maxima)
    nodes = {}
    for node in graph.nodes:
        fo = formats[node.output]
        kernel = None
        weights = float_kernel(node, graph)
        if weights is not None:
            codes, bias, fw, shift = quantise_kernel(weights[0], formats[node.inputs[0]], fo, fmt,
                                                     node=node, bias=weights[1])
            kernel = KernelCodes(codes, tuple(int(b) for b in bias), fw, shift)
        act = node.attrs.get("act")
        mapper = None if act is None else mapper_for(act, fo, fmt, config.segments, node=node)
        nodes[node.output] = NodeQuant(kernel, mapper)
    return Quantisation(formats, nodes)
