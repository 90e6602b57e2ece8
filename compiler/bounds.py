"""Worst-case error bounds: how far each quantised tensor can be from the float
network's, from the quantisation stage's decisions alone."""

import numpy as np

from .quantise import float_kernel

__all__ = ["error_bounds"]


def error_bounds(graph, quantisation, lowered, config, maxima=None):
    """``{tensor: bound}``: worst-case |quantised - float| per tensor (no
    saturation), propagated through the layers: input rounding, weight
    rounding against the largest input magnitude, every narrowing's half step
    (``lowered[n].narrowings`` of them), the mapper's measured error times the
    function's slope bound.  ``maxima``: calibrated magnitudes, or None."""
    fmt = config.fmt
    frac = quantisation.formats
    err = {graph.input: 0.5 * 2.0 ** -frac[graph.input]}

    def xmax(t):
        limit = 2.0 ** (fmt.width - 1 - frac[t])
        return min(limit, maxima[t] * 1.25) if maxima and t in maxima else limit

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
        elif node.op == "eltwise":
            op = node.attrs["op"]
            a, b = node.inputs
            if op in ("add", "sub"):
                e = e_in[0] + e_in[1]
            elif op in ("max", "min"):
                e = max(e_in)
            elif op == "mul":
                e = xmax(a) * e_in[1] + xmax(b) * e_in[0] + e_in[0] * e_in[1] + half
            else:
                e = float("inf")
        else:                   # max pooling, a lone activation: no rounding of their own
            e = e_in[0]
        if quant.mapper is not None:
            e = quant.mapper.lipschitz * e + quant.mapper.max_error
        err[node.output] = float(e)
    return err

