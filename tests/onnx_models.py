"""Small ONNX graphs built with ``onnx.helper`` for the compiler tests."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"


def model(nodes, in_shape, out_shape, inits=(), opset=13, out_name="y"):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(out_shape))],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32) if v.dtype.kind == "f" else v,
                                 name=k) for k, v in inits])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def save(m, tmp_path, name="m.onnx"):
    path = Path(tmp_path) / name
    onnx.save(m, str(path))
    return path


#: The largest input magnitude the tests declare for :func:`every_operator`
#: (their inputs are standard normal): over the whole Q8.8 range its LRN's
#: error bound says nothing, and the compiler refuses it.
EVERY_RANGE = 3.0


def every_operator(rng):
    """One network that uses every supported operator (for end-to-end tests):
    conv (padded, strided, depthwise, bias), BatchNormalization, LeakyRelu,
    Clip, MaxPool, AveragePool, Add/Sub/Mul/Max/Min of two streams, a constant
    Mul, Sigmoid, Tanh, LRN, GlobalAveragePool, Flatten, Gemm, Softmax."""
    w = lambda *s: rng.normal(0, 0.4, s)
    inits = [("w1", w(4, 2, 3, 3)), ("b1", w(4)), ("wd", w(4, 1, 3, 3)),
             ("g", 1 + 0.1 * w(4)), ("be", w(4)), ("mu", 0.1 * w(4)),
             ("var", 1 + np.abs(w(4))), ("half", np.array(0.5)),
             ("w2", w(4, 4, 1, 1)), ("wf", w(3, 4)), ("bf", w(3)), ("shape", np.array([1, 4]))]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["c1", "g", "be", "mu", "var"], ["bn"]),
        n("LeakyRelu", ["bn"], ["a1"], alpha=0.1),
        n("Conv", ["a1", "wd"], ["dw"], group=4, pads=[1, 1, 1, 1], strides=[1, 1]),
        n("Clip", ["dw", "", ""], ["cl"]),
        n("Tanh", ["a1"], ["t1"]),
        n("Add", ["cl", "t1"], ["s1"]),
        n("Mul", ["s1", "half"], ["m1"]),
        n("Sub", ["m1", "t1"], ["d1"]),
        n("Max", ["d1", "t1"], ["mx"]),
        n("Min", ["mx", "a1"], ["mn"]),
        n("Mul", ["mn", "t1"], ["pr"]),
        n("MaxPool", ["pr"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        n("LRN", ["p1"], ["l1"], size=3, alpha=0.1, beta=0.75, bias=1.0),
        n("Conv", ["l1", "w2"], ["c2"], strides=[1, 1]),
        n("Sigmoid", ["c2"], ["sg"]),
        n("AveragePool", ["sg"], ["ap"], kernel_shape=[2, 2], strides=[1, 1]),
        n("GlobalAveragePool", ["ap"], ["gp"]),
        n("Reshape", ["gp", "shape"], ["fl"]),
        n("Gemm", ["fl", "wf", "bf"], ["lo"], transB=1),
        n("Softmax", ["lo"], ["y"], axis=1),
    ]
    return model(nodes, (1, 2, 8, 8), (1, 3), inits)


def pooled_convolutions(rng):
    """Convolutions whose 2 x 2, stride 2 pools move into the mapper's pool
    stage: 6 -> 4 maps with tanh and an average pool (on ``tiny``'s four tiles
    its chains take two passes, so partial sums wait unpooled), 4 -> 3 padded
    with relu and a max pool, and 3 -> 2 1x1 with no activation and a max pool;
    odd sizes drop a last row or column.  Input (1, 6, 13, 14), output (1, 2, 1, 1)."""
    w = lambda *s: rng.normal(0, 0.3, s)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "wa", "ba"], ["ca"]), n("Tanh", ["ca"], ["ta"]),
        n("AveragePool", ["ta"], ["pa"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["pa", "wb", "bb"], ["cb"], pads=[1, 1, 1, 1]), n("Relu", ["cb"], ["rb"]),
        n("MaxPool", ["rb"], ["pb"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["pb", "wc"], ["cc"]),
        n("MaxPool", ["cc"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    inits = [("wa", w(4, 6, 3, 3)), ("ba", w(4)), ("wb", w(3, 4, 3, 3)), ("bb", w(3)), ("wc", w(2, 3, 1, 1))]
    return model(nodes, (1, 6, 13, 14), (1, 2, 1, 1), inits)
