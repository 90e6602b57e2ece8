"""ONNX -> graph IR.

Loads and checks the model, runs ONNX shape inference, folds the constant
subgraphs (initialisers, ``Constant``, ``ConstantOfShape``, and any node whose
inputs are all constant), and translates each remaining node into the IR of
:mod:`compiler.ir`.  Anything outside the supported set stops with a
:class:`~compiler.errors.CompileError` naming the node.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from .errors import CompileError
from .ir import Graph, Node

__all__ = ["load_model", "to_graph", "SUPPORTED"]

SUPPORTED = ("Conv", "Relu", "Tanh", "Sigmoid", "Clip", "LeakyRelu", "MaxPool", "AveragePool",
             "GlobalAveragePool", "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum",
             "BatchNormalization", "Gemm", "MatMul", "Flatten", "Reshape", "Identity", "Dropout",
             "LRN", "Softmax")

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
        onnx.checker.check_model(model)
    except Exception as exc:
        raise CompileError(f"{path}: invalid ONNX model: {str(exc).splitlines()[0]}") from None
    return model


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


def to_graph(model):
    """Translate a checked ONNX model into a :class:`~compiler.ir.Graph`."""
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:
        raise CompileError(f"shape inference failed: {str(exc).splitlines()[0]}") from None
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    value_shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        value_shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]

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
    x_shape = [1] + list(x_shape[1:])

    shapes = {x_name: _chw(x_shape, f"input {x_name!r}")}
    full_shapes = {x_name: tuple(x_shape)}
    nodes = []
    alias = {}                  # tensor -> tensor it is a no-op copy of

    def real(name):
        while name in alias:
            name = alias[name]
        return name

    for onnx_node in g.node:
        where = _Where(onnx_node)
        attrs = _attrs(onnx_node)
        op = onnx_node.op_type
        if op == "Constant":
            consts[onnx_node.output[0]] = numpy_helper.to_array(attrs["value"]) if "value" in attrs \
                else np.array(next(iter(attrs.values())))
            continue
        ins = [i for i in onnx_node.input]
        if all(i == "" or i in consts for i in ins) and ins:
            value = _fold(onnx_node, [consts[i] if i else None for i in ins], attrs)
            if value is None:
                raise CompileError(f"cannot fold the constant operator {op}", where)
            consts[onnx_node.output[0]] = np.asarray(value)
            continue
        if op not in SUPPORTED:
            raise CompileError(f"unsupported operator {op}; supported: {', '.join(SUPPORTED)}",
                               where)
        out = onnx_node.output[0]
        data = [real(i) for i in ins if i and i not in consts]
        constants = [consts[i] for i in ins if i and i in consts]
        for d in data:
            if d not in shapes:
                raise CompileError(f"input {d!r} has no known shape", where)
        in_full = full_shapes[data[0]] if data else None
        out_full = value_shapes.get(out)
        if op in ("Identity", "Dropout"):
            alias[out] = data[0]
            full_shapes[out] = in_full
            continue
        node = _translate(onnx_node, op, attrs, data, constants, in_full, shapes, where,
                          const_first=ins[0] in consts)
        if node is None:
            continue
        node.output = out
        node.onnx_outputs = [out]
        nodes.append(node)
        shape = _out_shape(node, shapes, where)
        if out_full and all(d is not None for d in out_full[1:]):
            full = (1,) + tuple(out_full[1:])
            if _chw(full, where.name) != shape:
                raise CompileError(f"inferred output shape {full} disagrees with the compiler's "
                                   f"{shape}", where)
            full_shapes[out] = full
        else:
            full_shapes[out] = (1,) + shape
        shapes[out] = shape

    y_name = g.output[0].name
    y = real(y_name)
    if y not in shapes:
        raise CompileError(f"output {y_name!r} is not computed from the input")
    graph = Graph(input=x_name, output=y, shapes=shapes, nodes=nodes, input_shape=tuple(x_shape),
                  output_shape=full_shapes.get(y, (1,) + shapes[y]), input_name=x_name,
                  output_name=y_name)
    return graph


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


def _translate(onnx_node, op, attrs, data, constants, in_full, shapes, where, const_first=False):
    mk = lambda ir_op, inputs, a=None, p=None: Node(ir_op, where.name, op, inputs, "", a or {},
                                                    p or {})
    if op == "Conv":
        if len(in_full) != 4:
            raise CompileError(f"input of rank {len(in_full)}: only 2-D convolutions are "
                               "supported", where)
        _check_2d(attrs, where)
        if not constants:
            raise CompileError("the weights must be constant", where)
        w = constants[0].astype(np.float64)
        b = constants[1].astype(np.float64) if len(constants) > 1 else np.zeros(w.shape[0])
        stride = _pair(attrs.get("strides"), (1, 1))
        kernel = tuple(w.shape[2:])
        return mk("conv", data, {"stride": stride, "groups": int(attrs.get("group", 1)),
                                 "pads": _pads(attrs, where, kernel, shapes[data[0]], stride),
                                 "act": None}, {"weight": w, "bias": b})
    if op in _ACT:
        return mk("act", data, {"act": _ACT[op](attrs)})
    if op == "Clip":
        lo, hi = float(attrs.get("min", -np.inf)), float(attrs.get("max", np.inf))
        names, values = list(onnx_node.input), iter(constants)
        if len(names) > 1 and names[1]:
            lo = float(next(values))
        if len(names) > 2 and names[2]:
            hi = float(next(values))
        return mk("act", data, {"act": ("clip", lo, hi)})
    if op in ("MaxPool", "AveragePool"):
        if len(in_full) != 4:
            raise CompileError(f"input of rank {len(in_full)}: only 2-D pooling is supported",
                               where)
        _check_2d(attrs, where)
        if attrs.get("storage_order", 0):
            raise CompileError("storage_order 1 is not supported", where)
        if len(onnx_node.output) > 1 and onnx_node.output[1]:
            raise CompileError("the Indices output is not supported", where)
        kernel = _pair(attrs["kernel_shape"], None)
        stride = _pair(attrs.get("strides"), (1, 1))
        pads = list(_pads(attrs, where, kernel, shapes[data[0]], stride))
        if attrs.get("ceil_mode", 0):
            _, h, w = shapes[data[0]]
            for axis, size in ((0, h), (1, w)):
                span = size + pads[axis] + pads[axis + 2] - kernel[axis]
                if span % stride[axis]:
                    extra = stride[axis] - span % stride[axis]
                    if op == "AveragePool":
                        raise CompileError("ceil_mode with a partial last window is not supported "
                                           "for AveragePool", where)
                    pads[axis + 2] += extra
        a = {"kernel": kernel, "stride": stride, "pads": tuple(pads)}
        if op == "AveragePool":
            if any(pads) and not attrs.get("count_include_pad", 0):
                raise CompileError("padding with count_include_pad=0 divides border windows by "
                                   "fewer terms; only count_include_pad=1 is supported", where)
            a["act"] = None
            return mk("avgpool", data, a)
        return mk("maxpool", data, a)
    if op == "GlobalAveragePool":
        _, h, w = shapes[data[0]]
        return mk("avgpool", data, {"kernel": (h, w), "stride": (1, 1), "pads": (0, 0, 0, 0),
                                    "act": None})
    if op in _ELTWISE:
        return _eltwise(op, data, constants, shapes, in_full, where, mk, const_first)
    if op == "BatchNormalization":
        scale, bias, mean, var = (c.astype(np.float64) for c in constants[:4])
        eps = float(attrs.get("epsilon", 1e-5))
        s = scale / np.sqrt(var + eps)
        return mk("affine", data, {"act": None}, {"scale": s, "shift": bias - mean * s})
    if op in ("Gemm", "MatMul"):
        return _gemm(op, attrs, data, constants, shapes, in_full, where, mk)
    if op in ("Flatten", "Reshape"):
        c, h, w = shapes[data[0]]
        if op == "Flatten" and attrs.get("axis", 1) != 1:
            raise CompileError(f"axis {attrs['axis']}: only Flatten(axis=1) is supported", where)
        if op == "Reshape":
            target = [int(s) for s in constants[0]] if constants else None
            if target is None:
                raise CompileError("the target shape must be constant", where)
            if len(target) != 2 or target[1] not in (-1, c * h * w) or target[0] not in (0, 1, -1):
                raise CompileError(f"reshape to {target}: only flattening to (N, {c * h * w}) is "
                                   "supported", where)
        return mk("flatten", data)
    if op == "LRN":
        return mk("lrn", data, {"size": int(attrs["size"]), "alpha": float(attrs.get("alpha", 1e-4)),
                                "beta": float(attrs.get("beta", 0.75)),
                                "bias": float(attrs.get("bias", 1.0))})
    if op == "Softmax":
        return mk("softmax", data, {"axis": int(attrs.get("axis", -1))})
    raise CompileError(f"unsupported operator {op}", where)


def _eltwise(op, data, constants, shapes, in_full, where, mk, const_first=False):
    kind = _ELTWISE[op]
    if op == "Sum" and len(data) != 2:
        if len(data) == 1 and not constants:
            return mk("act", data, {"act": ("clip", -np.inf, np.inf)})
        raise CompileError(f"Sum of {len(data)} tensors: only two are supported", where)
    if len(data) == 2:
        if shapes[data[0]] != shapes[data[1]]:
            raise CompileError(f"operands of shapes {shapes[data[0]]} and {shapes[data[1]]}: "
                               "broadcasting between two streams is not supported", where)
        return mk("eltwise", data, {"op": kind, "act": None})
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
        return mk("affine", data, {"act": None}, {"scale": np.ones(channels), "shift": vec})
    if kind == "sub":
        sign = -1.0 if const_first else 1.0         # c - x or x - c
        return mk("affine", data, {"act": None}, {"scale": np.full(channels, sign),
                                                  "shift": -sign * vec})
    if kind == "mul":
        return mk("affine", data, {"act": None}, {"scale": vec, "shift": np.zeros(channels)})
    if kind == "div":
        if const_first:
            raise CompileError("dividing a constant by a tensor is not supported", where)
        if np.any(vec == 0):
            raise CompileError("division by a constant zero", where)
        return mk("affine", data, {"act": None}, {"scale": 1.0 / vec, "shift": np.zeros(channels)})
    if kind in ("max", "min"):
        if np.ptp(vec) != 0:
            raise CompileError(f"{op} with a per-channel constant is not supported", where)
        v = float(vec[0])
        lo, hi = (v, np.inf) if kind == "max" else (-np.inf, v)
        return mk("act", data, {"act": ("clip", lo, hi)})
    raise CompileError(f"unsupported operator {op}", where)


def _gemm(op, attrs, data, constants, shapes, in_full, where, mk):
    if len(data) != 1 or not constants:
        raise CompileError("the weight operand must be constant", where)
    c, h, w = shapes[data[0]]
    if len(in_full) != 2:
        raise CompileError(f"input of rank {len(in_full)}: flatten it to (N, features) first",
                           where)
    features = c * h * w
    if op == "Gemm":
        b_mat = constants[0].astype(np.float64)
        if attrs.get("transA", 0):
            raise CompileError("transA=1 is not supported", where)
        weight = b_mat if attrs.get("transB", 0) else b_mat.T
        weight = weight * float(attrs.get("alpha", 1.0))
        n = weight.shape[0]
        bias = np.zeros(n)
        if len(constants) > 1:
            bias = np.broadcast_to(constants[1].astype(np.float64).ravel() if constants[1].size > 1
                                   else constants[1].astype(np.float64).ravel()[0], (n,)) * \
                float(attrs.get("beta", 1.0))
    else:
        weight = constants[0].astype(np.float64).T
        n = weight.shape[0]
        bias = np.zeros(n)
    if weight.ndim != 2 or weight.shape[1] != features:
        raise CompileError(f"weight shape {weight.shape} does not match {features} input features",
                           where)
    return mk("gemm", data, {"act": None}, {"weight": np.array(weight), "bias": np.array(bias)})


def _out_shape(node, shapes, where):
    c, h, w = shapes[node.inputs[0]]
    op, a = node.op, node.attrs
    if op == "conv":
        co, ci, kh, kw = node.params["weight"].shape
        if ci * a["groups"] != c:
            raise CompileError(f"weights for {ci * a['groups']} input maps, input has {c}", where)
        t, l, b, r = a["pads"]
        return (co, (h + t + b - kh) // a["stride"][0] + 1, (w + l + r - kw) // a["stride"][1] + 1)
    if op in ("maxpool", "avgpool"):
        (kh, kw), (sh, sw), (t, l, b, r) = a["kernel"], a["stride"], a["pads"]
        if h + t + b < kh or w + l + r < kw:
            raise CompileError(f"kernel {kh}x{kw} larger than the padded input {h}x{w}", where)
        return (c, (h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1)
    if op == "gemm":
        return (node.params["weight"].shape[0], 1, 1)
    if op == "flatten":
        return (c * h * w, 1, 1)
    return (c, h, w)
