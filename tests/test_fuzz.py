"""A property-based fuzzer of the compiler: Hypothesis builds small random ONNX
graphs from the supported operators (random shapes, strides, pads, kernels,
forks and joins, names with odd characters), and each must either compile and
match onnxruntime within the compiler's own error bound on the reference
engine, or be refused with one line naming the limit.  Any other outcome (a
traceback, a numpy warning, an answer outside the bound) fails.

``make test`` runs a fixed, derandomised number of examples; ``make fuzz``
(``NEUFLOW_FUZZ_EXAMPLES``) runs more."""

import os
import warnings

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from compiler import CompileError
from compiler.artefacts import write_outputs
from compiler.onnx_reference import run_onnx
from compiler.pipeline import compile_model
from sim.app.verify import verify_directory

EXAMPLES = int(os.environ.get("NEUFLOW_FUZZ_EXAMPLES", "40"))
INPUT_RANGE = 5.0           # the declared input range; the standard normal inputs are clipped to it
NAMES = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0,
                max_size=12)


class _Net:
    """A graph under construction: ONNX nodes, initialisers, the tensors made so
    far with their (C, H, W) shapes."""

    def __init__(self, draw, shape):
        self.draw, self.nodes, self.inits = draw, [], []
        self.tensors = [("x", shape)]
        self.rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))

    def name(self, prefix):
        return prefix + str(len(self.nodes) + len(self.inits))

    def const(self, value):
        name = self.name("k")
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def add(self, op, inputs, shape, **attrs):
        out = self.name("t")
        name = self.draw(NAMES)
        if name and name in {n.name for n in self.nodes}:
            name += f" {len(self.nodes)}"       # onnxruntime refuses a graph with two of a name
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        self.tensors.append((out, shape))
        return out


def _window(draw, h, w, pads_ok=True):
    """(kernel, stride, pads) with the kernel inside the padded input."""
    stride = draw(st.integers(1, 2))
    pads = [draw(st.integers(0, 2)) for _ in range(4)] if pads_ok and draw(st.booleans()) else [0] * 4
    k = draw(st.integers(1, max(1, min(h + pads[0] + pads[2], w + pads[1] + pads[3], 9))))
    return k, stride, pads


def _conv(draw, net, x, shape):
    c, h, w = shape
    k, stride, pads = _window(draw, h, w)
    group = c if c > 1 and draw(st.booleans()) else 1
    co = c * draw(st.integers(1, 2)) if group > 1 else draw(st.integers(1, 4))
    weight = net.rng.normal(0, 1 / np.sqrt(k * k * c / group), (co, c // group, k, k))
    inputs = [x, net.const(weight)] + ([net.const(net.rng.normal(0, 0.2, co))] if draw(st.booleans()) else [])
    ho, wo = (h + pads[0] + pads[2] - k) // stride + 1, (w + pads[1] + pads[3] - k) // stride + 1
    return net.add("Conv", inputs, (co, ho, wo), kernel_shape=[k, k], strides=[stride, stride],
                   pads=pads, group=group)


def _pool(draw, net, x, shape):
    c, h, w = shape
    op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
    k = draw(st.integers(1, min(h, w, 4)))
    stride = draw(st.integers(1, 2))
    pad = draw(st.integers(0, (k - 1) // 2)) if k > 1 else 0
    attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad] * 4}
    if op == "AveragePool" and pad:
        attrs["count_include_pad"] = draw(st.integers(0, 1))
    if op == "MaxPool" and draw(st.booleans()):
        attrs["ceil_mode"] = 1
    out = onnx.shape_inference.infer_shapes(_model(net.nodes + [helper.make_node(
        op, [x], ["probe"], **attrs)], net.inits, net.tensors[0][1], "probe", None))
    dims = [d.dim_value for d in out.graph.output[0].type.tensor_type.shape.dim] if \
        out.graph.output[0].type.tensor_type.shape.dim else None
    if not dims or len(dims) != 4 or min(dims) < 1:
        return None
    return net.add(op, [x], tuple(dims[1:]), **attrs)


def _activation(draw, net, x, shape):
    op = draw(st.sampled_from(["Relu", "Tanh", "Sigmoid", "LeakyRelu", "Clip"]))
    if op == "LeakyRelu":
        return net.add(op, [x], shape, alpha=draw(st.floats(-3, 3, allow_nan=False, width=16)))
    if op == "Clip":
        lo, hi = sorted(draw(st.lists(st.floats(-4, 4, width=16), min_size=2, max_size=2)))
        return net.add(op, [x, net.const(lo), net.const(hi)], shape)
    return net.add(op, [x], shape)


def _join(draw, net, x, shape):
    """A two-stream operator with an earlier tensor of the same shape (a fork and a join)."""
    partners = [t for t, s in net.tensors if s == shape]
    y = draw(st.sampled_from(partners))
    return net.add(draw(st.sampled_from(["Add", "Sub", "Mul", "Max", "Min"])), [x, y], shape)


def _affine(draw, net, x, shape):
    c = shape[0]
    op = draw(st.sampled_from(["Mul", "Add", "BatchNormalization"]))
    if op == "BatchNormalization":
        consts = [net.const(v) for v in (1 + 0.2 * net.rng.normal(size=c), net.rng.normal(0, 0.2, c),
                                         net.rng.normal(0, 0.2, c), 0.5 + net.rng.random(c))]
        return net.add(op, [x] + consts, shape)
    value = net.rng.normal(0, 1, (1, c, 1, 1) if draw(st.booleans()) else ())
    return net.add(op, [x, net.const(value)], shape)


def _model(nodes, inits, in_shape, out, out_shape):
    graph = helper.make_graph(nodes, "fuzz",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *in_shape])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
                              inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@st.composite
def networks(draw):
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 10)), draw(st.integers(1, 10)))
    net = _Net(draw, shape)
    x = "x"
    for _ in range(draw(st.integers(1, 4))):
        step = draw(st.sampled_from([_conv, _conv, _pool, _activation, _join, _affine]))
        made = step(draw, net, x, net.tensors[-1][1] if x != "x" else shape)
        if made is not None:
            x = made
    out_shape = net.tensors[-1][1]
    if draw(st.booleans()):             # a classifier head
        c, h, w = out_shape
        flat = net.add("Flatten", [x], (c * h * w, 1, 1))
        n = draw(st.sampled_from([1, 2, 3, 5, 8, 12, 16]))      # 8 or more may stream its weights
        x = net.add("Gemm", [flat, net.const(net.rng.normal(0, 1 / np.sqrt(c * h * w), (n, c * h * w))),
                             net.const(net.rng.normal(0, 0.1, n))], (n, 1, 1), transB=1)
        out = [1, n]
    else:
        out = [1, *out_shape]
    return _model(net.nodes, net.inits, shape, x, out)


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(networks())
def test_random_networks_compile_correctly_or_are_refused(tmp_path_factory, m):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "m.onnx"
    onnx.save(m, path)
    x = np.random.default_rng(7).normal(0, 1, (2,) + tuple(d.dim_value for d in
                                                     m.graph.input[0].type.tensor_type.shape.dim)[1:])
    x = np.clip(x, -INPUT_RANGE, INPUT_RANGE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            compiled = compile_model(path, "tiny", input_range=INPUT_RANGE, reference=False)
        except CompileError as exc:
            assert "\n" not in str(exc)
            return
        write_outputs(compiled, folder / "out")
        got = verify_directory(folder / "out", x).outputs
    want = run_onnx(m, x)[m.graph.output[0].name].reshape(got.shape)
    if np.max(np.abs(want)) >= 100:         # the float output leaves Q8.8: saturation, not error
        return
    err = float(np.max(np.abs(got - want)))
    assert err <= compiled.layers[-1].error_bound, (err, compiled.layers[-1].error_bound)
