"""The compiler's graph IR: float-domain dataflow operators on per-image tensors.

A tensor is one image's activation, shaped ``(C, H, W)`` (a vector of F
features is ``(F, 1, 1)``; the batch dimension is dropped, every image runs
the same program).  A node is one of the operators below; the passes of
:mod:`compiler.passes` rewrite ONNX's operator set into them, and
:mod:`compiler.schedule` lowers them onto the grid.

=========== ============================================================
``conv``    ``weight (Co, Ci/groups, kh, kw)``, ``bias (Co,)``; attrs
            ``stride (sh, sw)``, ``pads (top, left, bottom, right)``,
            ``groups``, ``act``
``maxpool`` attrs ``kernel (kh, kw)``, ``stride``, ``pads``
``avgpool`` attrs ``kernel``, ``stride``, ``pads`` (zero pads counted),
            ``act``
``gemm``    ``weight (N, F)``, ``bias (N,)``; the input is read flat
            (C*H*W features in C, H, W order); attrs ``act``
``eltwise`` two tensors; attrs ``op`` in add, sub, mul, div, max, min,
            ``act``; the second may be a constant of ``Graph.constants``
            with one map, which every map of the first meets
``affine``  per-channel ``scale (C,)`` and ``shift (C,)``:
            ``x * scale + shift``; attrs ``act``
``act``     the activation ``attrs['act']`` alone
``lrn``     local response normalisation across channels; attrs
            ``size``, ``alpha``, ``beta``, ``bias``
``flatten`` a view: ``(C, H, W)`` read as ``(C*H*W, 1, 1)``
``concat``  the inputs' channels one after the other; no pass: each input
            is a view of the output's buffer
``shuffle`` a channel shuffle of ``groups``; folded into its consumers, which
            then read their input maps in the order ``attrs['in_perm']``
            (``conv``, ``avgpool``, ``maxpool``, ``affine``)
=========== ============================================================

An activation is a tuple: ``("relu",)``, ``("tanh",)``, ``("sigmoid",)``,
``("clip", lo, hi)``, ``("leaky", alpha)``, ``("power", bias, scale, exponent)``
(LRN's denominator, made by :func:`compiler.passes.lower_lrn`).  Each is
monotone on each side of 0 and (but power) 0 at 0.
"""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Node", "Graph", "ACTIVATIONS", "activation_function", "as_conv", "printable"]

ACTIVATIONS = ("relu", "tanh", "sigmoid", "clip", "leaky")


def printable(text):
    """``text`` (a name from the model: untrusted) with every non-printable
    character escaped as ``\\xNN``, so it stays on one line wherever it is
    written (a comment of the listing, a cell of the report)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(text))


def activation_function(act):
    """The float function of an activation tuple (for reference and error bounds)."""
    kind = act[0]
    if kind == "relu":
        return lambda x: np.maximum(x, 0.0)
    if kind == "tanh":
        return np.tanh
    if kind == "sigmoid":
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    if kind == "clip":
        return lambda x: np.clip(x, act[1], act[2])
    if kind == "leaky":
        return lambda x: np.where(x >= 0, x, act[1] * x)
    if kind == "power":             # (bias + scale * max(x, 0)) ** exponent (LRN's denominator)
        bias, scale, exponent = act[1], act[2], act[3]
        return lambda x: (bias + scale * np.maximum(x, 0.0)) ** exponent
    raise ValueError(f"unknown activation {act!r}")


@dataclass
class Node:
    op: str                     #: IR operator (see the module docstring)
    name: str                   #: the ONNX node it came from (for messages and reports)
    onnx_op: str                #: that node's ONNX operator type
    inputs: list                #: tensor names
    output: str                 #: tensor name
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)      #: float numpy arrays
    #: ONNX tensors whose values this node's output stands for (for per-layer
    #: comparison); the last one is the node's own output.
    onnx_outputs: list = field(default_factory=list)


@dataclass
class Graph:
    input: str
    output: str
    shapes: dict                #: tensor name -> (C, H, W)
    nodes: list                 #: topological order
    input_shape: tuple = ()     #: the ONNX input's shape with the batch dimension (N, ...)
    output_shape: tuple = ()    #: the ONNX output's shape with the batch dimension
    input_name: str = ""        #: the ONNX input's name
    output_name: str = ""       #: the ONNX output's name
    host_softmax: bool = False  #: a final Softmax runs on the host
    constants: dict = field(default_factory=dict)   #: constant tensors an operator streams: name -> (C, H, W)

    def consumers(self, tensor):
        return [n for n in self.nodes if tensor in n.inputs]

    def producer(self, tensor):
        for n in self.nodes:
            if n.output == tensor:
                return n
        return None


def as_conv(node, graph):
    """The convolution a weighted node is, as a ``conv`` node with float weights
    ``(Co, Ci/groups, kh, kw)`` and bias: a convolution itself, an average
    pooling (a depthwise kernel holding the mean of its window) or a per-channel
    affine map (a depthwise 1 x 1 kernel).  None for other operators (a fully
    connected layer keeps its ``(N, F)`` weight; see :mod:`compiler.lower`)."""
    if node.op == "conv":
        return node
    c = graph.shapes[node.inputs[0]][0]
    if node.op == "avgpool":
        kh, kw = node.attrs["kernel"]
        return Node("conv", node.name, node.onnx_op, node.inputs, node.output,
                    dict(node.attrs, groups=c),
                    {"weight": np.full((c, 1, kh, kw), 1.0 / (kh * kw)), "bias": np.zeros(c)})
    if node.op == "affine":
        return Node("conv", node.name, node.onnx_op, node.inputs, node.output,
                    {"stride": (1, 1), "pads": (0, 0, 0, 0), "groups": c, "act": node.attrs.get("act"),
                     "in_perm": node.attrs.get("in_perm")},
                    {"weight": node.params["scale"].reshape(c, 1, 1, 1), "bias": node.params["shift"]})
    return None
