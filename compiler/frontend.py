"""ONNX -> graph IR.

Loads and checks the model, runs ONNX shape inference, folds the constant
subgraphs (initialisers, ``Constant``, ``ConstantOfShape``, and any node whose
inputs are all constant), and translates each remaining node into the IR of
:mod:`compiler.ir`.  Anything outside the supported set stops with a
:class:`~compiler.errors.CompileError` naming the node.
"""

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from .errors import CompileError
from .ir import Graph, Node, printable

__all__ = ["load_model", "to_graph", "SUPPORTED"]

_ACT = {"Relu": lambda a: ("relu",), "Tanh": lambda a: ("tanh",), "Sigmoid": lambda a: ("sigmoid",),
        "LeakyRelu": lambda a: ("leaky", float(a.get("alpha", 0.01)))}
_ELTWISE = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "max", "Min": "min",
            "Sum": "add"}


def load_model(path):
    """Read and check an ONNX file; a missing, truncated or non-ONNX file is a CompileError."""
    path = Path(path)
    if not path.is_file():
        raise CompileError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:            # protobuf's DecodeError and friends
        raise CompileError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise CompileError(f"{path}: not an ONNX model (no graph nodes)")
    try:
        onnx.checker.check_model(str(path))     # the checker reads the file: no copy of the model
    except Exception as exc:
        raise CompileError(f"{path}: invalid ONNX model: {_checker_message(exc)}") from None
    return model


def _checker_message(exc):
    """The checker's first line, with the node it names (its context line)."""
    text = str(exc) or type(exc).__name__
    first = printable(text.splitlines()[0])
    where = re.search(r"Name: (.*?) OpType: (\S+)", text)
    return f"node {printable(where[1])!r} ({where[2]}): {first}" if where else first


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Where:
    """Minimal stand-in so CompileError can name an ONNX node."""

    def __init__(self, node):
        self.name = node.name or (node.output[0] if node.output else "?")
        self.onnx_op = node.op_type


def _fold(node, inputs, attrs):
    """Evaluate a node whose inputs are all constant (numpy), or None if unknown."""
    op = node.op_type
    if op == "Identity" or op == "Dropout":
        return inputs[0]
    if op == "Transpose":
        return np.transpose(inputs[0], attrs.get("perm"))
    if op == "Reshape":
        shape = [int(s) for s in inputs[1]]
        shape = [inputs[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return inputs[0].reshape(shape)
    if op == "Flatten":
        axis = attrs.get("axis", 1)
        return inputs[0].reshape(int(np.prod(inputs[0].shape[:axis])), -1)
    if op == "Unsqueeze":
        axes = attrs.get("axes") if len(inputs) == 1 else [int(a) for a in inputs[1]]
        out = inputs[0]
        for a in sorted(axes):
            out = np.expand_dims(out, a)
        return out
    if op == "Squeeze":
        axes = attrs.get("axes") if len(inputs) == 1 else [int(a) for a in inputs[1]]
        return np.squeeze(inputs[0], axis=None if axes is None else tuple(axes))
    if op == "Cast":
        return inputs[0].astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if op == "ConstantOfShape":
        value = numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
        return np.full([int(s) for s in inputs[0]], value.ravel()[0], dtype=value.dtype)
    if op == "Shape":
        return np.array(inputs[0].shape, dtype=np.int64)
    if op in ("Add", "Sub", "Mul", "Div"):
        f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
        return f(inputs[0], inputs[1])
    if op == "Concat":
        return np.concatenate(inputs, axis=attrs["axis"])
    if op == "Gather":
        return np.take(inputs[0], inputs[1], axis=attrs.get("axis", 0))
    return None


def _chw(shape, what):
    """A per-image shape (batch dropped) as (C, H, W)."""
    if len(shape) == 4:
        return tuple(shape[1:])
    if len(shape) == 3:
        return (shape[1], 1, shape[2])
    if len(shape) == 2:
        return (shape[1], 1, 1)
    raise CompileError(f"{what}: tensors must be 2-D, 3-D or 4-D with a batch dimension, "
                       f"not {len(shape)}-D")


def _value_shapes(g):
    """``{tensor: [dims]}`` of every tensor shape inference typed (None: unknown dim)."""
    shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _data_input(g, consts, value_shapes):
    """(name, shape with batch 1) of the model's one data input (the graph input
    without an initialiser)."""
    data_inputs = [i for i in g.input if i.name not in consts]
    if len(data_inputs) != 1:
        raise CompileError(f"the model must have exactly one data input, not "
                           f"{len(data_inputs)} ({', '.join(i.name for i in data_inputs)})")
    if len(g.output) != 1:
        raise CompileError(f"the model must have exactly one output, not {len(g.output)}")
    x_name = data_inputs[0].name
    x_shape = value_shapes[x_name]
    if not x_shape or any(d is None for d in x_shape[1:]):
        raise CompileError(f"input {x_name!r}: dynamic shape {x_shape}; the compiler needs fixed "
                           f"sizes (the batch dimension may be dynamic)")
    if any(d < 1 for d in x_shape[1:]):
        raise CompileError(f"input {x_name!r}: shape {x_shape} has an empty dimension")
    return x_name, [1] + list(x_shape[1:])


class _Translation:
    """The state of :func:`to_graph`'s walk over the ONNX nodes: constants,
    per-image shapes (C, H, W), full shapes, no-op aliases and the IR nodes."""

    def __init__(self, consts, value_shapes, x_name, x_shape, opset):
        self.opset = opset
        self.consts = consts
        self.value_shapes = value_shapes
        self.shapes = {x_name: _chw(x_shape, f"input {x_name!r}")}
        self.full_shapes = {x_name: tuple(x_shape)}
        self.alias = {}                 # tensor -> tensor it is a no-op copy of
        self.nodes = []
        self.shuffling = {}             # a 5-D step of a channel shuffle -> (tensor, groups, transposed)
        self.constants = {}             # constant tensors the operators stream

    def real(self, name):
        while name in self.alias:
            name = self.alias[name]
        return name

    def _shuffle_step(self, onnx_node, attrs, where):
        """A step of a channel shuffle (``Reshape`` to ``(N, g, C/g, H, W)``,
        ``Transpose`` ``[0, 2, 1, 3, 4]``, ``Reshape`` back to ``(N, C, H, W)``):
        the first two are remembered, the third becomes a ``shuffle`` node.
        True when ``onnx_node`` was such a step; any other use of the 5-D views,
        and any other Transpose, is refused by name."""
        op, ins = onnx_node.op_type, [self.real(i) for i in onnx_node.input if i]
        out = onnx_node.output[0] if onnx_node.output else ""
        if any(i in self.shuffling for i in ins[1:]) or (ins and ins[0] in self.shuffling and op not in (
                "Transpose", "Reshape")):
            raise CompileError("a 5-D tensor is supported only as a step of a channel shuffle (Reshape "
                               "to (N, g, C/g, H, W), Transpose [0, 2, 1, 3, 4], Reshape back)", where)
        if op == "Transpose":
            step = self.shuffling.get(ins[0]) if ins else None
            if step is None or step[2] or list(attrs.get("perm", [])) != [0, 2, 1, 3, 4]:
                raise CompileError(f"Transpose with perm {list(attrs.get('perm', []))}: only the channel "
                                   "shuffle's (a Reshape to (N, g, C/g, H, W), Transpose [0, 2, 1, 3, 4], "
                                   "Reshape back) is supported", where)
            self.shuffling[out] = (step[0], step[1], True)
            return True
        if op != "Reshape" or not ins or ins[0] not in self.shapes and ins[0] not in self.shuffling:
            return False
        target = self.value_shapes.get(out)
        if ins[0] in self.shuffling:
            x, groups, transposed = self.shuffling[ins[0]]
            c, h, w = self.shapes[x]
            if not transposed or target is None or list(target[1:]) != [c, h, w]:
                raise CompileError(f"reshape of a channel shuffle's 5-D view to {target}: only back to "
                                   f"(N, {c}, {h}, {w}) after the Transpose is supported", where)
            node = Node("shuffle", where.name, op, [x], out, {"groups": groups})
            node.onnx_outputs = [out]
            self.nodes.append(node)
            self.shapes[out], self.full_shapes[out] = (c, h, w), (1, c, h, w)
            return True
        c, h, w = self.shapes[ins[0]]
        if target is None or len(target) != 5 or None in target or list(target[3:]) != [h, w] or \
                target[1] * target[2] != c or len(self.full_shapes[ins[0]]) != 4:
            return False
        self.shuffling[out] = (ins[0], int(target[1]), False)
        return True

    def _claim(self, name, where):
        """A name the compiler makes up for a tensor of its own: refused if the model uses it."""
        if name in self.shapes or name in self.value_shapes or name in self.consts:
            raise CompileError(f"tensor name {name!r} is taken; rename it", where)

    def add(self, onnx_node):
        """Fold, alias or translate one ONNX node."""
        where = _Where(onnx_node)
        attrs = _attrs(onnx_node)
        op = onnx_node.op_type
        consts = self.consts
        if op == "Constant":
            consts[onnx_node.output[0]] = numpy_helper.to_array(attrs["value"]) if "value" in attrs \
                else np.array(next(iter(attrs.values())))
            return
        ins = list(onnx_node.input)
        if all(i == "" or i in consts for i in ins) and ins:
            value = _fold(onnx_node, [consts[i] if i else None for i in ins], attrs)
            if value is None:
                raise CompileError(f"cannot fold the constant operator {op}", where)
            consts[onnx_node.output[0]] = np.asarray(value)
            return
        if self._shuffle_step(onnx_node, attrs, where):
            return
        if op not in SUPPORTED:
            raise CompileError(f"unsupported operator {op}; supported: {', '.join(SUPPORTED)}",
                               where)
        out = onnx_node.output[0]
        data = [self.real(i) for i in ins if i and i not in consts]
        for d in data:
            if d not in self.shapes:
                raise CompileError(f"input {d!r} has no known shape", where)
        in_full = self.full_shapes[data[0]] if data else None
        if op in ("Identity", "Dropout"):
            self.alias[out] = data[0]
            self.full_shapes[out] = in_full
            return
        constants = [consts[i] for i in ins if i and i in consts]
        for value in constants:
            if value.dtype.kind not in "biuf":
                raise CompileError(f"a constant operand of type {value.dtype}; the compiler takes "
                                   "real numbers", where)
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                bad = value.size - int(np.count_nonzero(np.isfinite(value)))
                raise CompileError(f"{bad} of {value.size} constant values are NaN or infinite",
                                   where)
        made = {}
        node = _translate(_Operands(onnx_node, op, attrs, data, constants, in_full, self.shapes,
                                    where, ins[0] in consts, self.opset, made))
        for name, value in made.items():
            self._claim(name, where)
            self.constants[name], self.shapes[name] = value, value.shape
        steps = node if isinstance(node, list) else [node]
        for step in steps[:-1]:         # internal steps: IR tensors no ONNX tensor stands for
            self._claim(step.output, where)
            self.nodes.append(step)
            self.shapes[step.output] = _out_shape(step, self.shapes, where)
            self.full_shapes[step.output] = (1,) + self.shapes[step.output]
        node = steps[-1]
        node.output = out
        node.onnx_outputs = [out]
        self.nodes.append(node)
        shape = _out_shape(node, self.shapes, where)
        out_full = self.value_shapes.get(out)
        if out_full and all(d is not None for d in out_full[1:]):
            full = (1,) + tuple(out_full[1:])
            if _chw(full, where.name) != shape:
                raise CompileError(f"inferred output shape {full} disagrees with the compiler's "
                                   f"{shape}", where)
            self.full_shapes[out] = full
        else:
            self.full_shapes[out] = (1,) + shape
        self.shapes[out] = shape


#: Initialisers of floats with more elements than this are weights, whose values
#: no shape depends on (see :func:`_inferred_shapes`).
WEIGHT_ELEMENTS = 1024
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16}


def _inferred_shapes(model):
    """``{tensor: [dims]}`` after ONNX shape inference (:func:`_value_shapes`).
    Inference serialises the model it is given, weights and all (4.5 s of
    VGG-19's compile), so it runs on a copy in which every float initialiser of
    more than :data:`WEIGHT_ELEMENTS` elements is a typed graph input instead:
    shapes depend on the values of shape-like tensors (integers, scales), never
    on a weight's."""
    g = model.graph
    weights = [t for t in g.initializer if t.data_type in _FLOAT_TYPES and
               math.prod(t.dims) > WEIGHT_ELEMENTS]
    declared = {i.name for i in g.input}
    inputs = list(g.input) + [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                              for t in weights if t.name not in declared]
    dropped = {t.name for t in weights}
    kept = [t for t in g.initializer if t.name not in dropped]
    light = onnx.helper.make_model(
        onnx.helper.make_graph(g.node, g.name, inputs, g.output, initializer=kept, value_info=g.value_info),
        opset_imports=model.opset_import, ir_version=model.ir_version, functions=model.functions)
    try:
        light = shape_inference.infer_shapes(light, strict_mode=False)
    except Exception as exc:
        raise CompileError(f"shape inference failed: {str(exc).splitlines()[0]}") from None
    return _value_shapes(light.graph)


def to_graph(model):
    """Translate a checked ONNX model into a :class:`~compiler.ir.Graph`."""
    value_shapes = _inferred_shapes(model)
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    x_name, x_shape = _data_input(g, consts, value_shapes)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    walk = _Translation(consts, value_shapes, x_name, x_shape, opset)
    for onnx_node in g.node:
        walk.add(onnx_node)
    y_name = g.output[0].name
    y = walk.real(y_name)
    if y not in walk.shapes:
        raise CompileError(f"output {y_name!r} is not computed from the input")
    return Graph(input=x_name, output=y, shapes=walk.shapes, nodes=walk.nodes,
                 input_shape=tuple(x_shape),
                 output_shape=walk.full_shapes.get(y, (1,) + walk.shapes[y]), input_name=x_name,
                 output_name=y_name, constants=walk.constants)


def _pair(v, default):
    v = default if v is None else v
    return (int(v[0]), int(v[-1])) if len(v) >= 1 else (default[0], default[1])


def _pads(attrs, where, kernel=None, shape=None, stride=None):
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for axis in (0, 1):
            size = shape[1 + axis]
            out = -(-size // stride[axis])
            total = max((out - 1) * stride[axis] + kernel[axis] - size, 0)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return (pads[0][0], pads[1][0], pads[0][1], pads[1][1])
    if auto == "VALID" or "pads" not in attrs:
        return (0, 0, 0, 0)
    p = [int(v) for v in attrs["pads"]]
    if len(p) != 4:
        raise CompileError(f"pads {p}: only 2-D operators are supported", where)
    return (p[0], p[1], p[2], p[3])


def _check_2d(attrs, where, key="kernel_shape"):
    if key in attrs and len(attrs[key]) != 2:
        raise CompileError(f"{key} {list(attrs[key])}: only 2-D operators are supported", where)
    dil = attrs.get("dilations")
    if dil is not None and any(d != 1 for d in dil):
        raise CompileError(f"dilations {list(dil)}: dilated operators are not supported", where)


@dataclass(frozen=True)
class _Operands:
    """One ONNX node as the translators see it."""
    node: object                #: the onnx NodeProto
    op: str
    attrs: dict
    data: list                  #: the tensor operands (IR tensor names)
    constants: list             #: the constant operands (numpy), in input order
    in_full: tuple              #: the first tensor operand's full shape (with N)
    shapes: dict                #: IR tensor -> (C, H, W)
    where: object               #: for error messages
    const_first: bool = False   #: the first input is a constant
    opset: int = 13             #: the model's ONNX opset
    made: dict = None           #: constant tensors the translator makes: name -> (C, H, W) floats

    def node_of(self, ir_op, inputs=None, attrs=None, params=None):
        return Node(ir_op, self.where.name, self.op, self.data if inputs is None else inputs, "",
                    attrs or {}, params or {})


def _conv(o):
    if len(o.in_full) != 4:
        raise CompileError(f"input of rank {len(o.in_full)}: only 2-D convolutions are "
                           "supported", o.where)
    _check_2d(o.attrs, o.where)
    if not o.constants:
        raise CompileError("the weights must be constant", o.where)
    w = o.constants[0].astype(np.float64)
    b = o.constants[1].astype(np.float64) if len(o.constants) > 1 else np.zeros(w.shape[0])
    stride = _pair(o.attrs.get("strides"), (1, 1))
    kernel = tuple(w.shape[2:])
    return o.node_of("conv", attrs={"stride": stride, "groups": int(o.attrs.get("group", 1)),
                                    "pads": _pads(o.attrs, o.where, kernel, o.shapes[o.data[0]], stride),
                                    "act": None}, params={"weight": w, "bias": b})


def _activation(o):
    return o.node_of("act", attrs={"act": _ACT[o.op](o.attrs)})


def _clip(o):
    lo, hi = float(o.attrs.get("min", -np.inf)), float(o.attrs.get("max", np.inf))
    names, values = list(o.node.input), iter(o.constants)
    if len(names) > 1 and names[1]:
        lo = float(next(values))
    if len(names) > 2 and names[2]:
        hi = float(next(values))
    return o.node_of("act", attrs={"act": ("clip", lo, hi)})


def _pool(o):
    attrs, where = o.attrs, o.where
    if len(o.in_full) != 4:
        raise CompileError(f"input of rank {len(o.in_full)}: only 2-D pooling is supported", where)
    _check_2d(attrs, where)
    if attrs.get("storage_order", 0):
        raise CompileError("storage_order 1 is not supported", where)
    if len(o.node.output) > 1 and o.node.output[1]:
        raise CompileError("the Indices output is not supported", where)
    kernel = _pair(attrs["kernel_shape"], None)
    stride = _pair(attrs.get("strides"), (1, 1))
    pads = list(_pads(attrs, where, kernel, o.shapes[o.data[0]], stride))
    if attrs.get("ceil_mode", 0):
        _, h, w = o.shapes[o.data[0]]
        for axis, size in ((0, h), (1, w)):
            span = size + pads[axis] + pads[axis + 2] - kernel[axis]
            out = -(-span // stride[axis]) + 1
            # ONNX drops a last window that would start in the end padding.
            if (out - 1) * stride[axis] >= size + pads[axis]:
                out -= 1
            extra = (out - 1) * stride[axis] + kernel[axis] - (size + pads[axis] + pads[axis + 2])
            if extra > 0:
                if o.op == "AveragePool":
                    raise CompileError("ceil_mode with a partial last window is not supported "
                                       "for AveragePool", where)
                pads[axis + 2] += extra
    a = {"kernel": kernel, "stride": stride, "pads": tuple(pads)}
    if o.op == "AveragePool":
        pool = o.node_of("avgpool", attrs=dict(a, act=None))
        if not any(pads) or attrs.get("count_include_pad", 0):
            return pool
        return _exclude_pads(o, pool, kernel, stride, pads)
    return o.node_of("maxpool", attrs=a)


def _exclude_pads(o, pool, kernel, stride, pads):
    """Average pooling whose border windows divide by their terms inside the
    image (``count_include_pad=0``): the pooling over every term, then a
    multiply by a constant map of ``terms in the window / terms inside``."""
    _, h, w = o.shapes[o.data[0]]
    counts = []
    for axis, size in ((0, h), (1, w)):
        out = (size + pads[axis] + pads[axis + 2] - kernel[axis]) // stride[axis] + 1
        start = np.arange(out) * stride[axis] - pads[axis]
        counts.append(np.minimum(start + kernel[axis], size) - np.maximum(start, 0))
    if min(c.min() for c in counts) < 1:
        raise CompileError("a pooling window lies wholly in the padding, where count_include_pad=0 "
                           "divides by zero", o.where)
    scale = kernel[0] * kernel[1] / np.outer(counts[0], counts[1]).astype(np.float64)
    pool.output = f"{o.node.output[0]}:all_terms"
    name = f"{o.node.output[0]}:terms_scale"
    o.made[name] = scale[None]
    return [pool, o.node_of("eltwise", [pool.output, name], {"op": "mul", "act": None})]


def _global_average_pool(o):
    _, h, w = o.shapes[o.data[0]]
    return o.node_of("avgpool", attrs={"kernel": (h, w), "stride": (1, 1), "pads": (0, 0, 0, 0),
                                       "act": None})


def _batch_norm(o):
    scale, bias, mean, var = (c.astype(np.float64) for c in o.constants[:4])
    eps = float(o.attrs.get("epsilon", 1e-5))
    if not np.all(var + eps > 0):
        raise CompileError(f"variance + epsilon must be positive (smallest "
                           f"{float(np.min(var + eps)):g}): the normalisation divides by its "
                           "square root", o.where)
    s = scale / np.sqrt(var + eps)
    return o.node_of("affine", attrs={"act": None}, params={"scale": s, "shift": bias - mean * s})


def _concat(o):
    """``Concat`` along channels: the inputs are views of the output's buffer
    (:func:`compiler.layout.plan_buffers`), so it costs no pass."""
    rank = len(o.in_full)
    axis = int(o.attrs.get("axis", 1))
    if o.constants:
        raise CompileError(f"{len(o.constants)} constant operands: only tensors are concatenated", o.where)
    if rank != 4 or axis not in (1, 1 - rank):
        raise CompileError(f"axis {axis} of a rank-{rank} tensor: only a Concat along the channels of "
                           "images (axis 1) is supported", o.where)
    if len(set(o.data)) != len(o.data):
        raise CompileError("a tensor concatenated with itself: each input of a Concat is a part of "
                           "its output's memory", o.where)
    sizes = {o.shapes[t][1:] for t in o.data}
    if len(sizes) != 1:
        raise CompileError(f"inputs of sizes {sorted(sizes)}: a Concat along channels needs one size",
                           o.where)
    return o.node_of("concat")


def _flatten(o):
    c, h, w = o.shapes[o.data[0]]
    if o.op == "Flatten" and o.attrs.get("axis", 1) != 1:
        raise CompileError(f"axis {o.attrs['axis']}: only Flatten(axis=1) is supported", o.where)
    if o.op == "Reshape":
        target = [int(s) for s in o.constants[0]] if o.constants else None
        if target is None:
            raise CompileError("the target shape must be constant", o.where)
        if len(target) != 2 or target[1] not in (-1, c * h * w) or target[0] not in (0, 1, -1):
            raise CompileError(f"reshape to {target}: only flattening to (N, {c * h * w}) is "
                               "supported", o.where)
    return o.node_of("flatten")


def _lrn(o):
    """LRN: ``x / (bias + alpha / size * sum of squares) ** beta``, a number for
    every input only with ``bias > 0`` and ``alpha >= 0``."""
    a = o.attrs
    size, alpha = int(a.get("size", 0)), float(a.get("alpha", 1e-4))
    beta, bias = float(a.get("beta", 0.75)), float(a.get("bias", 1.0))
    for name, value, good, limit in (("size", size, size >= 1, "at least 1"),
                                     ("alpha", alpha, alpha >= 0, "at least 0"),
                                     ("beta", beta, True, None), ("bias", bias, bias > 0, "positive")):
        if not math.isfinite(value):
            raise CompileError(f"{name} {value:g} must be finite", o.where)
        if not good:
            raise CompileError(f"{name} {value:g} must be {limit}", o.where)
    return o.node_of("lrn", attrs={"size": size, "alpha": alpha, "beta": beta, "bias": bias})


def _softmax(o):
    """ONNX's axis semantics for the tensor's rank: from opset 13 a softmax over
    one axis (default -1), before it over the flattened axes from ``axis`` on
    (default 1).  The host runs a softmax over the features; any other axis is
    refused by name (over an axis of size 1 every output would be 1)."""
    rank = len(o.in_full)
    axis = int(o.attrs.get("axis", -1 if o.opset >= 13 else 1))
    if not -rank <= axis < rank:
        raise CompileError(f"axis {axis} outside a rank-{rank} tensor", o.where)
    axis %= rank
    if axis != 1:
        reduced = o.in_full[axis:] if o.opset < 13 else (o.in_full[axis],)
        why = ("every output would be 1.0" if all(d == 1 for d in reduced)
               else "that is not the feature axis")
        raise CompileError(f"softmax over axis {axis} of a {tuple(o.in_full)} tensor "
                           f"(opset {o.opset}): {why}; only a softmax over the features (axis 1) "
                           "is supported", o.where)
    return o.node_of("softmax", attrs={"axis": axis})


def _same_shapes(shapes, tensors, where):
    """CompileError unless the ``tensors`` (streams of a term-by-term operator) have one shape."""
    for name in tensors[1:]:
        if shapes[name] != shapes[tensors[0]]:
            raise CompileError(f"operands of shapes {shapes[tensors[0]]} and {shapes[name]}: "
                               "broadcasting between two streams is not supported", where)


def _sum_chain(o):
    """``Sum`` of three or more tensors: a chain of two-operand adds, each
    partial sum an IR tensor of its own (``<output>:sum<k>``, no ONNX tensor)."""
    _same_shapes(o.shapes, o.data, o.where)
    nodes, partial = [], o.data[0]
    for k, name in enumerate(o.data[1:]):
        node = o.node_of("eltwise", [partial, name], {"op": "add", "act": None})
        if k < len(o.data) - 2:
            node.output = partial = f"{o.node.output[0]}:sum{k}"
        nodes.append(node)
    return nodes


def _eltwise(o):
    op, data, constants, shapes, in_full, where = o.op, o.data, o.constants, o.shapes, o.in_full, o.where
    const_first = o.const_first
    kind = _ELTWISE[op]
    if op == "Sum" and (len(data) != 2 or constants):
        if len(data) == 1 and not constants:
            return o.node_of("act", data, {"act": ("clip", -np.inf, np.inf)})
        if constants or len(data) < 2:
            raise CompileError(f"Sum of {len(data)} tensors and {len(constants)} constants: only "
                               "tensors are summed", where)
        return _sum_chain(o)
    if len(data) == 2:
        _same_shapes(shapes, data, where)
        return o.node_of("eltwise", data, {"op": kind, "act": None})
    if len(data) != 1 or len(constants) != 1:
        raise CompileError(f"{op} needs one or two tensor operands", where)
    c = constants[0].astype(np.float64)
    channels = shapes[data[0]][0]
    rank = len(in_full)
    # A constant that broadcasts per channel (or is a scalar) becomes a per-channel affine map.
    vec = None
    if c.size == 1:
        vec = np.full(channels, float(c.ravel()[0]))
    else:
        squeezed = c.reshape(c.shape[-(rank - 1):] if c.ndim >= rank - 1 else c.shape)
        if c.ndim >= rank - 1 and squeezed.shape[0] == channels and \
                all(d == 1 for d in squeezed.shape[1:]) and rank >= 3:
            vec = squeezed.reshape(channels)
        elif rank == 2 and c.size == channels:
            vec = c.reshape(channels)
    if vec is None:
        raise CompileError(f"constant operand of shape {c.shape}: only scalars and per-channel "
                           "constants are supported", where)
    if kind == "add":
        return o.node_of("affine", data, {"act": None}, {"scale": np.ones(channels), "shift": vec})
    if kind == "sub":
        sign = -1.0 if const_first else 1.0         # c - x or x - c
        return o.node_of("affine", data, {"act": None}, {"scale": np.full(channels, sign),
                                                  "shift": -sign * vec})
    if kind == "mul":
        return o.node_of("affine", data, {"act": None}, {"scale": vec, "shift": np.zeros(channels)})
    if kind == "div":
        if const_first:
            raise CompileError("dividing a constant by a tensor is not supported", where)
        if np.any(vec == 0):
            raise CompileError("division by a constant zero", where)
        return o.node_of("affine", data, {"act": None}, {"scale": 1.0 / vec, "shift": np.zeros(channels)})
    if kind in ("max", "min"):
        if np.ptp(vec) != 0:
            raise CompileError(f"{op} with a per-channel constant is not supported", where)
        v = float(vec[0])
        lo, hi = (v, np.inf) if kind == "max" else (-np.inf, v)
        return o.node_of("act", data, {"act": ("clip", lo, hi)})
    raise CompileError(f"unsupported operator {op}", where)


def _gemm(o):
    op, attrs, data, constants, shapes, in_full, where = (o.op, o.attrs, o.data, o.constants, o.shapes,
                                                           o.in_full, o.where)
    if len(data) != 1 or not constants:
        raise CompileError("the weight operand must be constant", where)
    c, h, w = shapes[data[0]]
    if len(in_full) != 2:
        raise CompileError(f"input of rank {len(in_full)}: flatten it to (N, features) first",
                           where)
    features = c * h * w
    if op == "Gemm":
        b_mat = constants[0]
        if attrs.get("transA", 0):
            raise CompileError("transA=1 is not supported", where)
        weight = _float_matrix(b_mat if attrs.get("transB", 0) else b_mat.T,
                               float(attrs.get("alpha", 1.0)))
        n = weight.shape[0]
        bias = np.zeros(n)
        if len(constants) > 1:
            bias = np.broadcast_to(constants[1].astype(np.float64).ravel() if constants[1].size > 1
                                   else constants[1].astype(np.float64).ravel()[0], (n,)) * \
                float(attrs.get("beta", 1.0))
    else:
        weight = _float_matrix(constants[0].T)
        n = weight.shape[0]
        bias = np.zeros(n)
    if weight.ndim != 2 or weight.shape[1] != features:
        raise CompileError(f"weight shape {weight.shape} does not match {features} input features",
                           where)
    return o.node_of("gemm", data, {"act": None}, {"weight": weight, "bias": np.array(bias)})


def _float_matrix(matrix, scale=1.0):
    """``matrix * scale`` as a new C-ordered float64 array (one copy of a
    fully connected layer's weights, which run to hundreds of megabytes)."""
    weight = np.array(matrix, dtype=np.float64, order="C")
    if scale != 1.0:
        weight *= scale
    return weight


def _window_fits(kernel, size, pads, where):
    """CompileError when a ``kernel`` (kh, kw) is larger than its padded input."""
    (kh, kw), (h, w), (t, l, b, r) = kernel, size, pads
    if h + t + b < kh or w + l + r < kw:
        raise CompileError(f"kernel {kh}x{kw} larger than the padded input {h + t + b}x{w + l + r}",
                           where)


def _out_shape(node, shapes, where):
    c, h, w = shapes[node.inputs[0]]
    op, a = node.op, node.attrs
    if op == "conv":
        co, ci, kh, kw = node.params["weight"].shape
        if min(co, ci, kh, kw) < 1:
            raise CompileError(f"weights of shape {node.params['weight'].shape}: an empty dimension",
                               where)
        if ci * a["groups"] != c:
            raise CompileError(f"weights for {ci * a['groups']} input maps, input has {c}", where)
        t, l, b, r = a["pads"]
        _window_fits((kh, kw), (h, w), a["pads"], where)
        if min(a["stride"]) < 1:
            raise CompileError(f"strides {list(a['stride'])}: strides must be at least 1", where)
        return (co, (h + t + b - kh) // a["stride"][0] + 1, (w + l + r - kw) // a["stride"][1] + 1)
    if op in ("maxpool", "avgpool"):
        (kh, kw), (sh, sw), (t, l, b, r) = a["kernel"], a["stride"], a["pads"]
        _window_fits((kh, kw), (h, w), a["pads"], where)
        if min(sh, sw) < 1 or min(kh, kw) < 1:
            raise CompileError(f"kernel {kh}x{kw}, strides {sh}x{sw}: both must be at least 1", where)
        return (c, (h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1)
    if op == "gemm":
        return (node.params["weight"].shape[0], 1, 1)
    if op == "flatten":
        return (c * h * w, 1, 1)
    if op == "concat":
        return (sum(shapes[t][0] for t in node.inputs), h, w)
    return (c, h, w)


#: ONNX operator -> translator of :class:`_Operands` into an IR :class:`~compiler.ir.Node`.
_TRANSLATORS = {
    "Conv": _conv, "Clip": _clip, "MaxPool": _pool, "AveragePool": _pool,
    "GlobalAveragePool": _global_average_pool, "BatchNormalization": _batch_norm,
    "Gemm": _gemm, "MatMul": _gemm, "Flatten": _flatten,
    "Reshape": _flatten, "LRN": _lrn, "Softmax": _softmax, "Concat": _concat,
    **{op: _activation for op in _ACT}, **{op: _eltwise for op in _ELTWISE},
}


def _translate(o):
    """The IR node of one ONNX node (:class:`_Operands`)."""
    translator = _TRANSLATORS.get(o.op)
    if translator is None:
        raise CompileError(f"unsupported operator {o.op}", o.where)
    return translator(o)


#: Every ONNX operator the compiler takes (constant subgraphs of others are folded).
SUPPORTED = tuple(sorted(_TRANSLATORS)) + ("Identity", "Dropout")
