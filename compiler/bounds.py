"""Worst-case error bounds: how far each quantised tensor can be from the float
network's, from the quantisation stage's decisions alone.

Beside the error, a magnitude analysis bounds how large each float tensor can
be (weights' row sums, biases, the activations' ranges), so that the terms
that multiply an error or a rounding by a tensor's size use that bound rather
than the whole range of the tensor's format."""

import numpy as np

from .ir import activation_function
from .quantise import float_kernel

__all__ = ["error_bounds", "vacuous_bounds"]


def _activation_magnitude(act, magnitude):
    """The largest |f(x)| for |x| <= ``magnitude``: every activation is monotone on
    each side of 0, so the ends and 0 bound it."""
    with np.errstate(all="ignore"):
        values = activation_function(act)(np.array([-magnitude, 0.0, magnitude]))
    return float(np.max(np.abs(values)))


def error_bounds(graph, quantisation, lowered, config, maxima=None, input_range=None):
    """``{tensor: bound}``: worst-case |quantised - float| per tensor (no
    saturation) for network inputs within ``±input_range`` (None: the input
    format's whole range), propagated through the layers: input rounding,
    weight rounding against the largest input magnitude, every narrowing's
    half step (``lowered[n].narrowings`` of them), the mapper's measured error
    times the function's slope bound.  ``maxima``: calibrated magnitudes, or
    None."""
    fmt = config.fmt
    frac = quantisation.formats
    limit = lambda t: fmt.span(frac[t])
    err = {graph.input: 0.5 * 2.0 ** -frac[graph.input]}
    size = {graph.input: limit(graph.input) if input_range is None       # bound on |float value|
            else min(limit(graph.input), input_range)}
    for t, value in graph.constants.items():
        err[t], size[t] = 0.5 * 2.0 ** -frac[t], float(np.max(np.abs(value)))

    def xmax(t):
        """The largest magnitude of the quantised tensor ``t``."""
        bound = min(limit(t), size[t] + err[t])
        return min(bound, maxima[t] * 1.25) if maxima and t in maxima else bound

    for node, low in zip(graph.nodes, lowered):
        quant = quantisation.nodes[node.output]
        half = 0.5 * 2.0 ** -frac[node.output]
        e_in = [err[t] for t in node.inputs]
        weights = float_kernel(node, graph)
        if weights is not None:
            w = weights[0].reshape(weights[0].shape[0], -1)
            fw = quant.kernel.weight_frac
            dw = 0.5 * 2.0 ** -fw
            l1 = np.abs(w).sum(axis=1).max() + w.shape[1] * dw
            terms = w.shape[1]
            e = l1 * e_in[0] + terms * dw * xmax(node.inputs[0]) + low.narrowings * half + \
                0.5 * 2.0 ** -(frac[node.inputs[0]] + fw)
            bias = np.abs(np.asarray(weights[1], dtype=np.float64)).reshape(-1)
            rows = np.abs(w).sum(axis=1) * size[node.inputs[0]]
            magnitude = float(np.max(rows + (bias if bias.size == rows.size else 0.0)))
        elif node.op == "eltwise":
            op = node.attrs["op"]
            a, b = node.inputs
            if op in ("add", "sub"):
                e, magnitude = e_in[0] + e_in[1], size[a] + size[b]
            elif op in ("max", "min"):
                e, magnitude = max(e_in), max(size[a], size[b])
            elif op == "mul":
                e = xmax(a) * e_in[1] + xmax(b) * e_in[0] + e_in[0] * e_in[1] + half
                magnitude = size[a] * size[b]
            else:
                e, magnitude = float("inf"), float("inf")
        elif node.op == "concat":
            e, magnitude = max(e_in), max(size[t] for t in node.inputs)
        else:                   # max pooling, a lone activation: no rounding of their own
            e, magnitude = e_in[0], size[node.inputs[0]]
        act = node.attrs.get("act")
        if quant.mapper is not None:
            # The float value is f of an input within ±magnitude, the mapped one
            # (up to the fit's error) f of an input within ±(magnitude + e): the
            # error is at most the sum of the two ranges.
            reach = _activation_magnitude(act, magnitude) + _activation_magnitude(act, magnitude + e)
            e = min(quant.mapper.lipschitz * e, reach) + quant.mapper.max_error
            magnitude = _activation_magnitude(act, magnitude)
        if node.attrs.get("pool") == "avg":
            e += half           # the pool stage's narrowing (a maximum needs none)
        err[node.output] = float(e)
        size[node.output] = float(magnitude)
    return err


def vacuous_bounds(graph, bounds, formats, fmt):
    """``[(node, bound, range)]`` of every layer whose error bound is at least
    the largest magnitude its output's format holds (a bound that says
    nothing), in order."""
    found = []
    for node in graph.nodes:
        span = fmt.span(formats[node.output])
        if not bounds[node.output] < span:
            found.append((node, bounds[node.output], span))
    return found
