"""The compiler on the reference engine: passes, operators against onnxruntime,
the PyTorch-converted models that ship with onnx, the light model structures,
bad inputs and the CLI."""

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from compiler import CompileError
from compiler.artefacts import write_outputs
from compiler.pipeline import compile_model
from compiler.frontend import load_model, to_graph
from compiler.onnx_reference import run_onnx
from neuflow_hdl.numerics import wrap_signed
from neuflow_hdl.regs import PoolMode
from compiler.passes import fold_affine_into_conv, fuse_activations, host_softmax, remove_flatten
from sim.app.cli import main
from sim.app.verify import verify_directory
from onnx_models import EVERY_RANGE, ONNX_DATA, every_operator, model, pooled_convolutions, save


def _compile_and_check(m, tmp_path, x, grid="tiny", name="m", input_range=None):
    """Compile, run the reference engine, compare with onnxruntime within the
    compiler's reported bound (of the output layer)."""
    path = save(m, tmp_path, f"{name}.onnx")
    compiled = compile_model(path, grid, input_range=input_range, reference=False)
    write_outputs(compiled, tmp_path / name)
    got = verify_directory(tmp_path / name, x).outputs
    want = run_onnx(m, x)[m.graph.output[0].name]
    err = np.abs(got - want.reshape(got.shape)).max()
    return compiled, err


# -- passes ---------------------------------------------------------------------------

def _graph(nodes, in_shape, out_shape, inits=()):
    return to_graph(model(nodes, in_shape, out_shape, inits))


def test_fuse_activation_into_conv():
    rng = np.random.default_rng(0)
    g = _graph([helper.make_node("Conv", ["x", "w"], ["c"]),
                helper.make_node("Tanh", ["c"], ["y"])], (1, 1, 5, 5), (1, 2, 3, 3),
               [("w", rng.normal(size=(2, 1, 3, 3)))])
    assert [n.op for n in g.nodes] == ["conv", "act"]
    fuse_activations(g)
    assert [n.op for n in g.nodes] == ["conv"] and g.nodes[0].attrs["act"] == ("tanh",)
    assert g.nodes[0].output == "y" and g.nodes[0].onnx_outputs == ["c", "y"]


def test_fold_batchnorm_into_conv():
    rng = np.random.default_rng(1)
    inits = [("w", rng.normal(size=(2, 1, 3, 3))), ("s", np.array([2.0, 0.5])),
             ("b", np.array([1.0, -1.0])), ("m", np.array([0.1, 0.2])), ("v", np.array([4.0, 1.0]))]
    g = _graph([helper.make_node("Conv", ["x", "w"], ["c"]),
                helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"],
                                 epsilon=0.0)], (1, 1, 5, 5), (1, 2, 3, 3), inits)
    w0 = g.nodes[0].params["weight"].copy()
    fold_affine_into_conv(g)
    assert [n.op for n in g.nodes] == ["conv"]
    np.testing.assert_allclose(g.nodes[0].params["weight"][0], w0[0] * 1.0)    # 2 / sqrt(4)
    np.testing.assert_allclose(g.nodes[0].params["bias"], [1.0 - 0.1, -1.0 - 0.5 * 0.2 / 1.0])


def test_softmax_goes_to_host_and_flatten_is_a_view():
    rng = np.random.default_rng(2)
    g = _graph([helper.make_node("Flatten", ["x"], ["f"]),
                helper.make_node("Gemm", ["f", "w"], ["l"], transB=1),
                helper.make_node("Softmax", ["l"], ["y"], axis=1)], (1, 2, 2, 2), (1, 3),
               [("w", rng.normal(size=(3, 8)))])
    host_softmax(g)
    remove_flatten(g)
    assert g.host_softmax and [n.op for n in g.nodes] == ["gemm"] and g.nodes[0].inputs == ["x"]


# -- operators against onnxruntime ---------------------------------------------------------

@pytest.mark.parametrize("nodes,in_shape,inits", [
    ([("Conv", ["x", "w", "b"], {"pads": [1, 1, 1, 1]}), ("Relu", None, {})],
     (1, 5, 9, 9), [("w", (3, 5, 3, 3)), ("b", (3,))]),
    ([("Conv", ["x", "w"], {"strides": [2, 2], "pads": [2, 1, 0, 1]})],
     (1, 2, 11, 9), [("w", (4, 2, 5, 5))]),
    ([("Conv", ["x", "w", "b"], {})], (1, 1, 12, 12), [("w", (2, 1, 9, 9)), ("b", (2,))]),
    ([("Conv", ["x", "w"], {"group": 3})], (1, 3, 7, 6), [("w", (3, 1, 3, 2))]),
    ([("MaxPool", ["x"], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})],
     (1, 2, 9, 9), []),
    ([("MaxPool", ["x"], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1})],
     (1, 2, 7, 7), []),
    ([("MaxPool", ["x"], {"kernel_shape": [1, 1], "strides": [2, 2], "pads": [0, 0, 0, 0],
                          "ceil_mode": 1})], (1, 1, 2, 3), []),
    ([("MaxPool", ["x"], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                          "ceil_mode": 1})], (1, 1, 6, 5), []),
    ([("AveragePool", ["x"], {"kernel_shape": [3, 3], "strides": [1, 1]})], (1, 2, 6, 6), []),
    ([("GlobalAveragePool", ["x"], {})], (1, 3, 5, 5), []),
    ([("Sigmoid", ["x"], {})], (1, 2, 3, 70), []),
    ([("Clip", ["x", "lo", "hi"], {})], (1, 2, 4, 4),
     [("lo", np.array(-0.5)), ("hi", np.array(1.0))]),
    ([("Conv", ["x", "w"], {"pads": [0, 0, 0, 0]})], (1, 1, 4, 100), [("w", (2, 1, 3, 3))]),
], ids=["conv-relu", "conv-strided-asym-pads", "conv-9x9-over-K", "grouped-nonsquare",
        "maxpool-pad", "maxpool-ceil", "maxpool-ceil-window-in-padding", "maxpool-ceil-padded",
        "avgpool", "global-avgpool", "sigmoid-wide",
        "clip", "conv-strips-wider-than-max-width"])
def test_operator_against_onnxruntime(tmp_path, nodes, in_shape, inits):
    rng = np.random.default_rng(len(nodes) * 7 + in_shape[1])
    onnx_nodes, prev = [], None
    for n, (op, inputs, attrs) in enumerate(nodes):
        out = "y" if n == len(nodes) - 1 else f"t{n}"
        onnx_nodes.append(helper.make_node(op, inputs or [prev], [out], **attrs))
        prev = out
    init = [(name, shape if isinstance(shape, np.ndarray) else rng.normal(0, 0.3, shape))
            for name, shape in inits]
    m = onnx.shape_inference.infer_shapes(model(onnx_nodes, in_shape, [], init))
    out_shape = [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
    m = model(onnx_nodes, in_shape, out_shape, init)
    x = rng.normal(0, 1, (2,) + in_shape[1:])
    compiled, err = _compile_and_check(m, tmp_path, x)
    assert err <= compiled.layers[-1].error_bound, (err, compiled.layers[-1].error_bound)


def _within_bound_calibrated(m, tmp_path, x):
    """``m`` compiled with ``x`` as its calibration: within its bound of onnxruntime on ``x``."""
    tuned = compile_model(save(m, tmp_path, "tuned.onnx"), "tiny", x, reference=True)
    write_outputs(tuned, tmp_path / "tuned")
    got = verify_directory(tmp_path / "tuned", x).outputs
    assert np.abs(got - run_onnx(m, x)["y"].reshape(got.shape)).max() <= tuned.layers[-1].error_bound


def _on_the_rtl(m, tmp_path, x):
    """``m`` on the tiny grid's RTL: bit-exact against the reference engine, and
    every layer's measured cycles within 15 % of its estimate."""
    compiled = compile_model(save(m, tmp_path), "tiny", reference=False)
    write_outputs(compiled, tmp_path / "net")
    result = verify_directory(tmp_path / "net", x, "rtl")
    assert result.bit_exact, result.first_mismatch
    for layer, measured in zip(compiled.layers, result.images[0].layer_cycles):
        assert abs(layer.cycles - measured) <= 0.15 * measured, (layer.name, layer.cycles, measured)


def _sum_of(count, rng):
    """``count`` 3x3 convolutions of one input, summed by one ONNX Sum, then a Relu."""
    convs = [helper.make_node("Conv", ["x", f"w{n}"], [f"c{n}"], pads=[1, 1, 1, 1]) for n in range(count)]
    nodes = convs + [helper.make_node("Sum", [f"c{n}" for n in range(count)], ["s"], name="sum"),
                     helper.make_node("Relu", ["s"], ["y"])]
    return model(nodes, (1, 2, 6, 6), (1, 3, 6, 6),
                 [(f"w{n}", rng.normal(0, 0.3, (3, 2, 3, 3))) for n in range(count)])


@pytest.mark.parametrize("count", [3, 4])
def test_sum_of_many_tensors(tmp_path, count):
    """Sum of three or more tensors: a chain of two-operand adds (internal partial
    sums), within the bound of onnxruntime; with calibration too (a partial sum's
    range bounded by its operands')."""
    rng = np.random.default_rng(count)
    m = _sum_of(count, rng)
    x = rng.normal(0, 1, (2, 2, 6, 6))
    compiled, err = _compile_and_check(m, tmp_path, x)
    adds = [layer for layer in compiled.layers if layer.op == "Sum"]
    assert len(adds) == count - 1 and adds[-1].onnx_output in ("s", "y")   # the Relu may be fused
    assert all(a.onnx_output is None for a in adds[:-1])
    assert err <= compiled.layers[-1].error_bound, (err, compiled.layers[-1].error_bound)
    _within_bound_calibrated(m, tmp_path, x)


@pytest.mark.verilator
def test_sum_of_many_tensors_on_the_rtl(tmp_path):
    _on_the_rtl(_sum_of(3, np.random.default_rng(9)), tmp_path, np.random.default_rng(10).normal(0, 1, (1, 2, 6, 6)))


def test_sum_refuses_constants_and_mismatched_shapes(tmp_path):
    rng = np.random.default_rng(11)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Sum", ["c", "c", "k"], ["y"], name="sum")]
    m = model(nodes, (1, 1, 4, 4), (1, 1, 2, 2), [("w", rng.normal(size=(1, 1, 3, 3))),
                                                  ("k", np.ones((1, 1, 2, 2)))])
    with pytest.raises(CompileError, match="only tensors are summed"):
        compile_model(save(m, tmp_path), "tiny", reference=False)
    nodes[1] = helper.make_node("Sum", ["c", "c", "x"], ["y"], name="sum")
    m = model(nodes, (1, 1, 4, 4), (1, 1, 2, 2), [("w", rng.normal(size=(1, 1, 3, 3)))])
    with pytest.raises(CompileError, match="broadcasting"):
        compile_model(save(m, tmp_path), "tiny", reference=False)


def _inception(rng):
    """Three branches concatenated (one a Concat itself, one through a Relu), then
    a 3x3 convolution over the concatenation: GoogLeNet's block in small."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["x", "w1"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["p"]),
             helper.make_node("Concat", ["b", "p"], ["bp"], axis=-3, name="inner"),
             helper.make_node("Concat", ["ar", "bp"], ["c"], axis=1, name="cat"),
             helper.make_node("Conv", ["c", "w3"], ["y"], pads=[1, 1, 1, 1])]
    return model(nodes, (1, 2, 6, 6), (1, 3, 6, 6),
                 [("w0", rng.normal(0, 0.3, (3, 2, 3, 3))), ("w1", rng.normal(0, 0.3, (2, 2, 3, 3))),
                  ("w2", rng.normal(0, 0.3, (1, 2, 1, 1))), ("w3", rng.normal(0, 0.3, (3, 6, 3, 3)))])


def test_concat_in_place(tmp_path):
    """Concat along channels costs no pass: its inputs are views of its buffer
    (nested ones too), sharing the border its consumer needs; the network is
    within the bound of onnxruntime, with and without calibration, and the
    layers' cycles split into causes that add up to their estimates."""
    from compiler.utilisation import layer_split
    rng = np.random.default_rng(21)
    m = _inception(rng)
    x = rng.normal(0, 1, (2, 2, 6, 6))
    compiled, err = _compile_and_check(m, tmp_path, x)
    assert err <= compiled.layers[-1].error_bound, (err, compiled.layers[-1].error_bound)
    b = compiled.buffers
    assert [len(layer.passes) for layer in compiled.layers if layer.op == "Concat"] == [0, 0]
    assert b["c"].view is None and b["bp"].view == ("c", 3) and b["b"].view == ("bp", 0)
    assert [b[t].base for t in ("ar", "b", "p")] == [b["c"].base + n * b["c"].map_words for n in (0, 3, 5)]
    assert {b[t].pads for t in ("ar", "b", "p", "bp", "c")} == {(1, 1, 1, 1)}
    for layer in compiled.layers:
        assert sum(layer_split(layer, compiled.config).values()) == \
            layer.cycles * compiled.config.convolver_macs, layer.name
    _within_bound_calibrated(m, tmp_path, x)


@pytest.mark.verilator
def test_concat_on_the_rtl(tmp_path):
    _on_the_rtl(_inception(np.random.default_rng(22)), tmp_path,
                np.random.default_rng(23).normal(0, 1, (1, 2, 6, 6)))


@pytest.mark.parametrize("nodes, out, needle", [
    ([helper.make_node("Concat", ["a", "b"], ["y"], axis=2)], (1, 1, 8, 4), "axis 2"),
    ([helper.make_node("Concat", ["a", "a"], ["y"], axis=1)], (1, 2, 4, 4), "with itself"),
    ([helper.make_node("Concat", ["a", "k"], ["y"], axis=1)], (1, 2, 4, 4), "constant"),
    ([helper.make_node("Concat", ["a", "b"], ["c"], axis=1), helper.make_node("Concat", ["a", "c"], ["y"], axis=1)],
     (1, 3, 4, 4), "two concatenations"),
    ([helper.make_node("MaxPool", ["b"], ["q"], kernel_shape=[2, 2], strides=[2, 2]),
      helper.make_node("Concat", ["a", "q"], ["y"], axis=1)], (1, 2, 4, 4), "one size"),
], ids=["axis", "twice", "constant", "two-concats", "sizes"])
def test_concat_refusals(tmp_path, nodes, out, needle):
    rng = np.random.default_rng(24)
    convs = [helper.make_node("Conv", ["x", "w"], ["a"]), helper.make_node("Conv", ["x", "w"], ["b"])]
    m = model(convs + nodes, (1, 1, 6, 6), out, [("w", rng.normal(size=(1, 1, 3, 3))), ("k", np.ones((1, 1, 4, 4)))])
    with pytest.raises(CompileError, match=needle):
        compile_model(save(m, tmp_path), "tiny", reference=False)


def _shuffled(groups, channels, rng, after=None):
    """A grouped 3x3 convolution, Relu, a channel shuffle of ``groups`` (Reshape,
    Transpose, Reshape) and a depthwise 3x3 convolution (``after``: other nodes
    reading the shuffle ``sh`` instead, making ``y``): ShuffleNet's unit in small."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1], group=2),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Reshape", ["ar", "s5"], ["r5"]),
             helper.make_node("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t5", "s4"], ["sh"], name="shuffle")]
    nodes += after or [helper.make_node("Conv", ["sh", "w1"], ["y"], pads=[1, 1, 1, 1], group=channels)]
    inits = [("w0", rng.normal(0, 0.3, (channels, 1, 3, 3))),
             ("s5", np.array([1, groups, channels // groups, 6, 6], np.int64)),
             ("s4", np.array([1, channels, 6, 6], np.int64)), ("w1", rng.normal(0, 0.3, (channels, 1, 3, 3)))]
    return model(nodes, (1, 2, 6, 6), (1, channels, 6, 6), inits)


@pytest.mark.parametrize("groups, channels", [(2, 6), (3, 6)])
def test_channel_shuffle_is_a_permutation(tmp_path, groups, channels):
    """A channel shuffle costs no pass: the depthwise convolution after it reads
    its input maps in the shuffled order; within the bound of onnxruntime."""
    from compiler.passes import shuffle_order
    rng = np.random.default_rng(groups)
    m = _shuffled(groups, channels, rng)
    x = rng.normal(0, 1, (2, 2, 6, 6))
    compiled, err = _compile_and_check(m, tmp_path, x)
    assert [layer.op for layer in compiled.layers] == ["Conv", "Conv"]
    assert err <= compiled.layers[-1].error_bound, (err, compiled.layers[-1].error_bound)
    # ONNX's steps on the channel numbers: (g, C/g), transposed, flattened.
    assert list(shuffle_order(channels, groups)) == \
        list(np.arange(channels).reshape(groups, channels // groups).T.ravel())


@pytest.mark.parametrize("after, needle", [
    ([helper.make_node("Relu", ["sh"], ["y"])], "reads a channel shuffle"),
    ([helper.make_node("Identity", ["sh"], ["y"])], "network's output"),
])
def test_channel_shuffle_refusals(tmp_path, after, needle):
    m = _shuffled(2, 6, np.random.default_rng(5), after)
    with pytest.raises(CompileError, match=needle):
        compile_model(save(m, tmp_path), "tiny", reference=False)


def test_other_transposes_are_refused(tmp_path):
    rng = np.random.default_rng(6)
    m = _shuffled(2, 6, rng)
    m.graph.node[3].attribute[0].ints[:] = [0, 1, 2, 4, 3]
    with pytest.raises(CompileError, match="only the channel shuffle"):
        compile_model(save(m, tmp_path), "tiny", reference=False)
    nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 3, 2])]
    with pytest.raises(CompileError, match="Transpose with perm"):
        compile_model(save(model(nodes, (1, 1, 4, 4), (1, 1, 4, 4)), tmp_path, "t.onnx"), "tiny",
                      reference=False)


def _residual_concat_shuffle(rng):
    """The zoo's new operators in one 32x32 network: a residual Sum of three
    tensors, a Concat and a channel shuffle."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "w1"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["ar", "w2"], ["c"]),
             helper.make_node("Sum", ["ar", "b", "c"], ["s"], name="residual"),
             helper.make_node("Concat", ["s", "ar"], ["cat"], axis=1),
             helper.make_node("Reshape", ["cat", "s5"], ["r5"]),
             helper.make_node("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t5", "s4"], ["sh"]),
             helper.make_node("Conv", ["sh", "w3"], ["d"], pads=[1, 1, 1, 1], group=8),
             helper.make_node("MaxPool", ["d"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    inits = [("w0", rng.normal(0, 0.3, (4, 2, 3, 3))), ("w1", rng.normal(0, 0.2, (4, 4, 3, 3))),
             ("w2", rng.normal(0, 0.3, (4, 4, 1, 1))), ("w3", rng.normal(0, 0.3, (8, 1, 3, 3))),
             ("s5", np.array([1, 2, 4, 32, 32], np.int64)), ("s4", np.array([1, 8, 32, 32], np.int64))]
    return model(nodes, (1, 2, 32, 32), (1, 8, 16, 16), inits)


def test_residual_concat_shuffle_network(tmp_path):
    m = _residual_concat_shuffle(np.random.default_rng(30))
    x = np.random.default_rng(31).normal(0, 1, (2, 2, 32, 32))
    compiled, err = _compile_and_check(m, tmp_path, x)
    assert err <= compiled.layers[-1].error_bound, (err, compiled.layers[-1].error_bound)


@pytest.mark.verilator
def test_residual_concat_shuffle_network_on_the_rtl(tmp_path):
    _on_the_rtl(_residual_concat_shuffle(np.random.default_rng(30)), tmp_path,
                np.random.default_rng(32).normal(0, 1, (1, 2, 32, 32)))


def _streamed_fc(rng, outputs=24):
    """A convolution, then two fully connected layers; the first has enough
    inputs (4 x 6 x 6 = 144 > 7 x 7) and outputs to stream its weights."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c"]),
             helper.make_node("Relu", ["c"], ["cr"]),
             helper.make_node("Flatten", ["cr"], ["f"]),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["g"], name="streamed", transB=1),
             helper.make_node("Relu", ["g"], ["gr"]),
             helper.make_node("Gemm", ["gr", "w2", "b2"], ["y"], name="kernels", transB=1)]
    inits = [("w0", rng.normal(0, 0.4, (4, 2, 3, 3))), ("w1", rng.normal(0, 0.12, (outputs, 144))),
             ("b1", rng.normal(0, 0.2, outputs)), ("w2", rng.normal(0, 0.3, (3, outputs))),
             ("b2", rng.normal(0, 0.2, 3))]
    return model(nodes, (1, 2, 8, 8), (1, 3), inits)


def test_fully_connected_weights_stream_as_data(tmp_path):
    """A wide fully connected layer streams its weights as images, one per
    chunk of its input, with the chunks as run-time kernels and the bias as
    the first partial sum: equal to onnxruntime within its bound, in one pass
    per chain of chunks rather than one per output and chain."""
    m = _streamed_fc(np.random.default_rng(40))
    x = np.random.default_rng(41).normal(0, 1, (3, 2, 8, 8))
    compiled, err = _compile_and_check(m, tmp_path, x)
    assert err <= compiled.layers[-1].error_bound, (err, compiled.layers[-1].error_bound)
    streamed, kernels = compiled.layers[-2], compiled.layers[-1]
    assert any("weights streamed: 3 images" in note for note in streamed.notes), streamed.notes
    assert not any("streamed" in note for note in kernels.notes)        # 3 outputs, 24 inputs
    chain = max(len([t for t in p.tiles if t.weights is not None]) for p in streamed.passes)
    assert len(streamed.passes) == -(-3 // chain)               # 144 inputs = 3 chunks of 49
    weights = compiled.buffers[f"{streamed.output}:weights"]
    bias = compiled.buffers[f"{streamed.output}:bias"]
    # 24 outputs as a 3 x 8 map (8 x 7 columns fit tiny's 64-word rows): output
    # r*8 + q's weights of chunk c are the 7 x 7 block (r, q) of image c.
    assert (weights.channels, weights.height, weights.width) == (3, 21, 56)
    assert weights.holds == ("weights", streamed.output) and bias.holds == ("bias", streamed.output)
    w1 = dict((t.name, numpy_helper.to_array(t)) for t in m.graph.initializer)["w1"]
    padded = np.zeros((24, 3 * 49))
    padded[:, :144] = w1
    fmt = compiled.config.fmt
    images = wrap_signed(weights.gather(compiled.image[weights.base:weights.base + weights.size]), fmt.width)
    for n in (0, 9, 23):
        r, q = divmod(n, 8)
        for c in range(3):
            block = images[c, 7 * r:7 * r + 7, 7 * q:7 * q + 7].ravel()
            assert np.array_equal(block, fmt.quantise(padded[n, 49 * c:49 * c + 49], weights.frac))


@pytest.mark.verilator
def test_streamed_fully_connected_on_the_rtl(tmp_path):
    _on_the_rtl(_streamed_fc(np.random.default_rng(40)), tmp_path,
                np.random.default_rng(42).normal(0, 1, (1, 2, 8, 8)))


def _pointwise(rng):
    """A 3x3 convolution to 60 maps of 4x4, a channel shuffle, then two 1 x 1
    convolutions (the second at stride 2) small enough to stream their
    weights per output pixel."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Reshape", ["ar", "s5"], ["r5"]),
             helper.make_node("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t5", "s4"], ["sh"]),
             helper.make_node("Conv", ["sh", "w1", "b1"], ["b"], name="shuffled"),
             helper.make_node("Relu", ["b"], ["br"]),
             helper.make_node("Conv", ["br", "w2", "b2"], ["y"], name="strided", strides=[2, 2])]
    inits = [("w0", rng.normal(0, 0.3, (60, 3, 3, 3))), ("w1", rng.normal(0, 0.1, (24, 60, 1, 1))),
             ("b1", rng.normal(0, 0.1, 24)), ("w2", rng.normal(0, 0.15, (16, 24, 1, 1))),
             ("b2", rng.normal(0, 0.1, 16)),
             ("s5", np.array([1, 2, 30, 4, 4], np.int64)), ("s4", np.array([1, 60, 4, 4], np.int64))]
    return model(nodes, (1, 3, 8, 8), (1, 16, 2, 2), inits)


def test_pointwise_convolutions_stream_weights_per_pixel(tmp_path, monkeypatch):
    """A 1 x 1 convolution on small maps computes each output pixel as a fully
    connected layer whose weights stream: equal to onnxruntime within its
    bound, its images the weights by the buffer's order of input maps (the
    shuffle undone), one pass per pixel, and estimated cheaper than the
    kernels' schedule it replaces."""
    from compiler import lower
    m = _pointwise(np.random.default_rng(50))
    x = np.random.default_rng(51).normal(0, 1, (3, 3, 8, 8))
    compiled, err = _compile_and_check(m, tmp_path, x)
    assert err <= compiled.layers[-1].error_bound, (err, compiled.layers[-1].error_bound)
    shuffled, strided = compiled.layers[-2], compiled.layers[-1]
    for layer, chunks, pixels in ((shuffled, 2, 16), (strided, 1, 4)):
        assert any(f"per output pixel: {chunks} images" in note for note in layer.notes), layer.notes
        assert len(layer.passes) == pixels          # tiny: a chain of the chunks, one per pass
    weights = compiled.buffers[f"{shuffled.output}:weights"]
    assert (weights.channels, weights.height, weights.width) == (2, 24 * 7, 7)
    w1 = dict((t.name, numpy_helper.to_array(t)) for t in m.graph.initializer)["w1"].reshape(24, 60)
    fmt = compiled.config.fmt
    images = wrap_signed(weights.gather(compiled.image[weights.base:weights.base + weights.size]), fmt.width)
    stored = np.zeros((24, 2 * 49))
    for k in range(60):             # shuffled map k is map (k % 2) * 30 + k // 2 of the buffer
        stored[:, (k % 2) * 30 + k // 2] = w1[:, k]
    for o in (0, 11, 23):
        for c in range(2):
            block = images[c, 7 * o:7 * o + 7, :].ravel()
            assert np.array_equal(block, fmt.quantise(stored[o, 49 * c:49 * c + 49], weights.frac))
    monkeypatch.setattr(lower, "PIXEL_STREAM_SHARE", 0.0)
    kernels = compile_model(save(m, tmp_path, "kernels.onnx"), "tiny", reference=False)
    for streamed, plain in zip(compiled.layers[-2:], kernels.layers[-2:]):
        assert not any("per output pixel" in note for note in plain.notes)
        assert streamed.cycles < plain.cycles / 2, (streamed.name, streamed.cycles, plain.cycles)


@pytest.mark.verilator
def test_pointwise_convolutions_per_pixel_on_the_rtl(tmp_path):
    _on_the_rtl(_pointwise(np.random.default_rng(50)), tmp_path,
                np.random.default_rng(52).normal(0, 1, (1, 3, 8, 8)))


def _exclusive_average(stride, size=7):
    """A 3x3 convolution, then a 3x3 AveragePool with pads of 1 that divides a
    border window by its terms inside the image (count_include_pad=0), as
    GoogLeNet (stride 1) and ShuffleNet (stride 2) use it."""
    rng = np.random.default_rng(stride)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["c"], ["y"], kernel_shape=[3, 3], strides=[stride, stride],
                              pads=[1, 1, 1, 1], count_include_pad=0)]
    out = (size + 2 - 3) // stride + 1
    return model(nodes, (1, 2, size, size), (1, 3, out, out), [("w", rng.normal(0, 0.3, (3, 2, 3, 3)))])


@pytest.mark.parametrize("stride", [1, 2])
def test_average_pool_excluding_pads(tmp_path, stride):
    """count_include_pad=0: the pooling over every term, then a multiply by a
    constant map (terms per window / terms inside) that the memory image holds;
    within the bound of onnxruntime, with and without calibration."""
    m = _exclusive_average(stride)
    x = np.random.default_rng(40 + stride).normal(0, 1, (2, 2, 7, 7))
    compiled, err = _compile_and_check(m, tmp_path, x)
    assert err <= compiled.layers[-1].error_bound, (err, compiled.layers[-1].error_bound)
    (name, scale), = compiled.graph.constants.items()
    assert scale[0, 0, 0] == 9 / 4 and scale[0, 1, 1] == 1.0 and scale[0, 0, 1] == 9 / 6
    _within_bound_calibrated(m, tmp_path, x)


def test_a_constant_multiplier_beside_a_coarse_output(tmp_path):
    """A pad-excluding average pool concatenated with a large-valued tensor:
    calibrated, the concatenation's format keeps few fraction bits, and the
    pool's constant multiplier gets a format coarse enough for the ALU's
    output shift (ShuffleNet's stride-2 units, which it once refused)."""
    rng = np.random.default_rng(70)
    nodes = [helper.make_node("Conv", ["x", "w"], ["big"], strides=[2, 2]),
             helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["big", "p"], ["y"], axis=1)]
    m = model(nodes, (1, 2, 7, 7), (1, 4, 4, 4), [("w", 1000 * rng.normal(0, 1, (2, 2, 1, 1)))])
    x = rng.normal(0, 1, (2, 2, 7, 7))
    tuned = compile_model(save(m, tmp_path, "tuned.onnx"), "tiny", x, reference=True)
    write_outputs(tuned, tmp_path / "tuned")
    got = verify_directory(tmp_path / "tuned", x).outputs
    assert np.abs(got - run_onnx(m, x)["y"].reshape(got.shape)).max() <= tuned.layers[-1].error_bound


@pytest.mark.verilator
def test_average_pool_excluding_pads_on_the_rtl(tmp_path):
    _on_the_rtl(_exclusive_average(2), tmp_path, np.random.default_rng(43).normal(0, 1, (1, 2, 7, 7)))


def test_pooling_fuses_into_the_mapper(tmp_path):
    """2 x 2, stride 2 pools after convolutions run in the mapper's pool stage:
    no layer of their own, each convolution's output written once, pooled
    (and partial sums of chains that take several passes written unpooled to
    their own buffer); within the bound of onnxruntime, with and without
    calibration, on every layer."""
    m = pooled_convolutions(np.random.default_rng(50))
    x = np.random.default_rng(51).normal(0, 1, (2, 6, 13, 14))
    compiled, err = _compile_and_check(m, tmp_path, x)
    assert [(layer.op, layer.shape) for layer in compiled.layers] == \
        [("Conv", (4, 5, 6)), ("Conv", (3, 2, 3)), ("Conv", (2, 1, 1))]
    assert err <= compiled.layers[-1].error_bound, (err, compiled.layers[-1].error_bound)
    first = compiled.layers[0]
    partials, pooled = compiled.buffers[f"{first.output}:partials"], compiled.buffers[first.output]
    inside = lambda rect, b: b.base <= rect.base < b.base + b.size
    writes = [rect for p in first.passes for _, rect, _ in p.writes]
    assert any(inside(r, partials) for r in writes) and any(inside(r, pooled) for r in writes)
    assert all(inside(r, partials) or inside(r, pooled) for r in writes)
    pools = [t.mapper["pool"] for p in first.passes for t in p.tiles if t.mapper is not None]
    assert pools and all(pool == {"mode": PoolMode.SUM, "shift": 2, "width": 12, "height": 11} for pool in pools)
    _within_bound_calibrated(m, tmp_path, x)
    checked = compile_model(save(m, tmp_path, "checked.onnx"), "tiny", reference=True)
    assert all(row["max_abs"] <= row["bound"] for row in checked.accuracy.rows)


@pytest.mark.verilator
def test_pooling_in_the_mapper_on_the_rtl(tmp_path):
    _on_the_rtl(pooled_convolutions(np.random.default_rng(50)), tmp_path,
                np.random.default_rng(52).normal(0, 1, (1, 6, 13, 14)))


def test_every_operator_network(tmp_path):
    m = every_operator(np.random.default_rng(1))
    x = np.random.default_rng(2).normal(0, 1, (2, 2, 8, 8))
    compiled, err = _compile_and_check(m, tmp_path, x, input_range=EVERY_RANGE)
    assert err < 0.01           # softmax probabilities


def test_calibration_chooses_formats(tmp_path):
    rng = np.random.default_rng(3)
    m = model([helper.make_node("Conv", ["x", "w"], ["y"])], (1, 1, 6, 6), (1, 1, 4, 4),
              [("w", rng.normal(0, 0.05, (1, 1, 3, 3)))])
    path = save(m, tmp_path)
    x = rng.normal(0, 0.2, (4, 1, 6, 6))
    plain = compile_model(path, "tiny", reference=False)
    tuned = compile_model(path, "tiny", x, reference=True)
    assert tuned.buffers["y"].frac > plain.buffers["y"].frac == 8
    assert tuned.errors[0]["max_abs"] <= tuned.layers[0].error_bound


# -- the models that ship with onnx ----------------------------------------------------------

PYTORCH = ["test_Conv2d", "test_Conv2d_strided", "test_Conv2d_padding", "test_Conv2d_depthwise",
           "test_Conv2d_depthwise_padded", "test_Conv2d_depthwise_strided",
           "test_Conv2d_depthwise_with_multiplier", "test_Conv2d_groups", "test_Conv2d_no_bias",
           "test_MaxPool2d", "test_AvgPool2d", "test_AvgPool2d_stride", "test_ReLU", "test_Tanh",
           "test_Sigmoid", "test_Linear", "test_Linear_no_bias", "test_LeakyReLU",
           "test_LeakyReLU_with_negval", "test_BatchNorm2d_eval", "test_BatchNorm2d_momentum_eval"]


@pytest.mark.parametrize("name", PYTORCH)
def test_pytorch_converted(tmp_path, name):
    d = ONNX_DATA / "pytorch-converted" / name
    x = numpy_helper.to_array(onnx.load_tensor(str(d / "test_data_set_0" / "input_0.pb")))
    y = numpy_helper.to_array(onnx.load_tensor(str(d / "test_data_set_0" / "output_0.pb")))
    compiled = compile_model(d / "model.onnx", "tiny", reference=False)
    write_outputs(compiled, tmp_path)
    got = verify_directory(tmp_path, x).outputs
    assert np.abs(got - y).max() <= compiled.layers[-1].error_bound


def test_sparse_connection_table_shares_input_maps(tmp_path):
    """A connection table (zero kernels) on neuflow-v6: the blocking that packs
    chains of outputs reading the same input maps wins and needs fewer passes
    than chains of any fixed length; the result stays within the bound."""
    from compiler.lower import lower_node
    from compiler.quantise import quantise
    from compiler.schedule import conv_packings
    from neuflow_hdl.presets import preset
    rng = np.random.default_rng(12)
    outs, ins, fan_in = 24, 16, 6
    mask = np.zeros((outs, ins))
    for o in range(outs):
        mask[o, rng.choice(ins, fan_in, replace=False)] = 1
    w = rng.normal(0, 0.1, (outs, ins, 7, 7)) * mask[:, :, None, None]
    m = model([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Tanh", ["c"], ["y"])],
              (1, ins, 40, 40), (1, outs, 34, 34), [("w", w)])
    x = rng.normal(0, 1, (1, ins, 40, 40))
    compiled, err = _compile_and_check(m, tmp_path, x, grid="neuflow-v6")
    layer = compiled.layers[0]
    (blocking,) = [n for n in layer.notes if n.startswith("blocking:")]
    assert blocking.endswith("terms sharing input maps"), blocking
    assert err <= layer.error_bound, (err, layer.error_bound)
    config = preset("neuflow-v6")
    graph = compiled.graph
    (job,) = lower_node(graph.nodes[0], graph, compiled.buffers, config, quantise(graph, config)).jobs
    packings = conv_packings(job, config)
    shared = packings["shared", int(blocking.split()[5])][0]
    assert len(layer.passes) == len(shared)
    assert len(shared) < min(len(p[0]) for k, p in packings.items() if not isinstance(k, tuple))
    # A line read at two chain positions reaches the later readers through their
    # FIFO banks (schedule.HOP_LAG: beyond the convolver's partial-sum slack the
    # fork would throttle the pass).
    lagged = 0
    for p in layer.passes:
        position = _chain_positions(p, config)
        direct, buffered = {}, {}
        for t in p.tiles:
            if t.routes.get("convolver_in", "").startswith("global_in_"):
                direct.setdefault(t.routes["convolver_in"], set()).add(position[t.tile])
            elif t.routes.get("convolver_in") == "fifo_0":
                buffered.setdefault(t.routes["fifo_0_in"], []).append(position[t.tile])
        for line, positions in direct.items():
            assert len(positions) == 1, (line, positions)
            assert all(j > min(positions) for j in buffered.get(line, []))
        lagged += sum(len(v) for v in buffered.values())
    assert lagged


def _greedy_packing(job, config, chain_length, ports):
    """The packing schedule._pack must find, chain by chain (the reference):
    every output's first group of ``chain_length`` terms in order, then every
    second group, ...; a chain joins the pass unless its output is in it, or
    the pass's tiles, ports (inputs, partial sums, outputs), input lines or
    output lines would overflow, or it is of another frame group.  None when a
    chain does not fit a pass of its own."""
    tiles, lines_in, lines_out = config.tiles, config.globals_ - 1, config.globals_
    groups = [-(-len(t) // chain_length) for t in job.terms]
    passes, current, sources, psums = [], [], set(), 0
    for g in range(max(groups)):
        psum = 1 if g > 0 or job.initial else 0
        for o, terms in enumerate(job.terms):
            if g >= groups[o]:
                continue
            chain = terms[g * chain_length:(g + 1) * chain_length]
            window = {src for src, _ in chain}
            n_in = len(sources | window) + psums + psum
            if current and (o in {c[0] for c in current} or
                            sum(len(c[2]) for c in current) + len(chain) > tiles or
                            n_in + len(current) + 1 > ports or n_in > lines_in or len(current) + 1 > lines_out or
                            job.frame_groups is not None and job.frame_groups[o] != job.frame_groups[current[0][0]]):
                passes.append(current)
                current, sources, psums = [], set(), 0
                n_in = len(window) + psum
            if len(chain) > tiles or n_in + 1 > ports or n_in > lines_in:
                return None
            current.append((o, g, chain))
            sources |= window
            psums += psum
    return (passes + [current] if current else passes), groups


@pytest.mark.parametrize("grid", ["tiny", "neuflow-v6"])
def test_layers_pack_as_the_greedy_packing_does(grid):
    """schedule._pack, which takes alike outputs' chains a pass at a time, finds
    the chain-by-chain greedy packing (:func:`_greedy_packing`) for random
    layers: dense ones, ones whose outputs drop a few input maps (a kernel
    quantised to zero), in frame groups or not, with random chain lengths,
    port budgets and partial sums; and packs every term once."""
    from compiler import schedule
    from compiler.layout import Rect
    from compiler.lower import ConvJob, ConvMode
    from neuflow_hdl.presets import preset
    config = preset(grid)
    rng = np.random.default_rng(5)
    rect = Rect(0, 4, 4, 4)
    for case in range(300):
        n_in, n_out = int(rng.integers(1, 24)), int(rng.integers(1, 24))
        reads = [list(range(n_in)) for _ in range(n_out)]
        if case % 3:                                # some outputs drop an input map
            for o in rng.choice(n_out, int(rng.integers(0, n_out)), replace=False):
                if n_in > 1:
                    reads[o].remove(int(rng.integers(0, n_in)))
        frame_groups = [o // int(rng.integers(1, 5)) for o in range(n_out)] if case % 5 == 0 else None
        job = ConvJob(ConvMode.MAC, 1, 0, [(rect, 3)] * n_in, [rect] * n_out,
                      [[(src, bytes([o, src])) for src in srcs] for o, srcs in enumerate(reads)], [0] * n_out,
                      initial=[rect] * n_out if rng.random() < 0.3 else None, frame_groups=frame_groups)
        length = int(rng.integers(1, config.tiles + 1))
        ports = int(rng.integers(2, config.ports + 1))
        packed = schedule._pack(job, config, length, ports)
        assert packed == _greedy_packing(job, config, length, ports), (case, n_in, n_out, length, ports)
        if packed is not None:
            terms = sorted((o, src) for chains in packed[0] for o, _, chain in chains for src, _ in chain)
            assert terms == sorted((o, src) for o, srcs in enumerate(reads) for src in srcs)


def _chain_positions(p, config):
    """{tile: links from its chain's head} of a pass, from the psum routes alone."""
    from neuflow_hdl.regs import OFFSET
    setups = {t.tile: t for t in p.tiles}

    def position(tile):
        source = setups[tile].routes.get("convolver_psum", "")
        if not source.endswith("_in") or source.startswith("global"):
            return 0
        dr, dc = OFFSET[source[:-3]]
        return 1 + position(tile + dr * config.columns + dc)
    return {t: position(t) for t in setups}


@pytest.mark.parametrize("name", ["light_squeezenet"])
def test_zoo_structure_compiles_in_full_on_neuflow_v6(name, tmp_path):
    """A structure of the model zoo (seeded random weights) compiles in full for
    neuflow-v6: every node lowered, the program and the image linked within its
    256 M-word memory, every weight in the image, and the reference engine
    equal to onnxruntime within the compiler's bound on a calibration input."""
    from sim.app.zoo import zoo_model
    from neuflow_hdl.presets import preset
    config = preset("neuflow-v6")
    m = zoo_model(name)
    weights = sum(int(np.prod(t.dims)) for t in m.graph.initializer if len(t.dims) == 4)
    x = np.random.default_rng(1).normal(0.0, 1.0, (1, 3, 224, 224)).clip(-3.0, 3.0)
    path = save(m, tmp_path, f"{name}.onnx")
    compiled = compile_model(path, "neuflow-v6", calibration=x)
    assert weights <= len(compiled.image) <= config.memory_words
    assert len(compiled.layers) == len(compiled.graph.nodes)
    assert compiled.errors and all(r["max_abs"] <= r["bound"] for r in compiled.errors)


def test_estimate_model_matches_compile(tmp_path):
    """The estimate without linking (used for networks too large to compile) is
    the compile's own: one cost model, the same passes and cycles per layer."""
    from compiler.pipeline import estimate_model
    path = save(every_operator(np.random.default_rng(0)), tmp_path)
    compiled = compile_model(path, "tiny", input_range=EVERY_RANGE, reference=False)
    estimate = estimate_model(path, "tiny")
    assert [r["passes"] for r in estimate["layers"]] == [len(l.passes) for l in compiled.layers]
    assert [r["macs"] for r in estimate["layers"]] == [l.macs for l in compiled.layers]
    assert [r["cycles"] for r in estimate["layers"]] == [l.cycles for l in compiled.layers]


# -- bad inputs --------------------------------------------------------------------------------

def test_bad_files(tmp_path):
    good = save(every_operator(np.random.default_rng(0)), tmp_path)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model\n")
    for path in (truncated, text, tmp_path / "missing.onnx"):
        with pytest.raises(CompileError) as info:
            load_model(path)
        assert "\n" not in str(info.value)


def test_unsupported_operator_and_oversized_pool(tmp_path):
    m = model([helper.make_node("Relu", ["x"], ["r"], name="first"),
               helper.make_node("Elu", ["r"], ["y"], name="bad_elu")], (1, 1, 4, 4), (1, 1, 4, 4))
    with pytest.raises(CompileError, match=r"node 'bad_elu' \(Elu\): unsupported operator Elu"):
        compile_model(save(m, tmp_path, "elu.onnx"), "tiny", reference=False)
    m = model([helper.make_node("MaxPool", ["x"], ["y"], name="big", kernel_shape=[9, 9])],
              (1, 1, 12, 12), (1, 1, 4, 4))
    with pytest.raises(CompileError, match=r"node 'big' \(MaxPool\).*at most 7x7"):
        compile_model(save(m, tmp_path, "pool.onnx"), "tiny", reference=False)


def test_cli_compile_and_simulate(tmp_path, capsys):
    m = every_operator(np.random.default_rng(4))
    path = save(m, tmp_path)
    assert main(["compile", str(path), "--grid", "tiny", "-o", str(tmp_path / "out"),
                 "--input-range", str(EVERY_RANGE)]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["layers"] and manifest["estimated_cycles"] > 0
    for f in ("image.hex", "program.s", "report.md"):
        assert (tmp_path / "out" / f).is_file()
    x = np.random.default_rng(5).normal(0, 1, (1, 2, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["simulate", str(tmp_path / "out"), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "y.npy")]) == 0
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (1, 3) and abs(y.sum() - 1) < 0.01
    capsys.readouterr()
    (tmp_path / "bad.onnx").write_text("nope")
    assert main(["compile", str(tmp_path / "bad.onnx"), "-o", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neuflow: error:") and err.count("\n") == 1
    np.save(tmp_path / "wrong.npy", np.zeros((1, 3, 8, 8)))
    assert main(["simulate", str(tmp_path / "out"), "--input", str(tmp_path / "wrong.npy"),
                 "--output", str(tmp_path / "y.npy")]) == 2
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    for broken in (manifest[:len(manifest) // 2], json.dumps({"grid": "tiny"})):
        (tmp_path / "out" / "manifest.json").write_text(broken)
        capsys.readouterr()
        assert main(["simulate", str(tmp_path / "out"), "--input", str(tmp_path / "x.npy"),
                     "--output", str(tmp_path / "y.npy")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "manifest.json" in err, err


def test_node_names_cannot_change_the_program(tmp_path):
    """Node names are untrusted: one ending in a line ``halt 0`` (or holding any
    control character) reaches the listing only as an escaped comment, so the
    program and the whole image are the same as with plain names; the report's
    table keeps one row per layer."""
    from sim.golden.asm import assemble, to_words
    plain = every_operator(np.random.default_rng(0))
    hostile = onnx.ModelProto()
    hostile.CopyFrom(plain)
    for n, node in enumerate(hostile.graph.node):
        node.name = f"n{n}\nhalt 0\r\x00| x |\u2028"
    a = compile_model(save(plain, tmp_path, "plain.onnx"), "tiny", input_range=EVERY_RANGE,
                      reference=False)
    b = compile_model(save(hostile, tmp_path, "hostile.onnx"), "tiny", input_range=EVERY_RANGE,
                      reference=False)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(to_words(assemble(a.source)), to_words(assemble(b.source)))
    assert "\nhalt 0" not in b.source.replace("    halt 0", "")
    write_outputs(b, tmp_path / "r")
    lines = (tmp_path / "r" / "report.md").read_text().split("\n")
    header = next(l for l in lines if l.startswith("| # | layer"))
    rows = [l for l in lines if l.startswith("| ") and l[2:3].isdigit()]
    assert len(rows) == len(b.layers)
    assert all(r.count(" | ") == header.count(" | ") for r in rows), rows[0]
    assert not any(l.startswith("halt") for l in lines)


def test_compiling_pauses_the_collector_and_restores_it_after_the_outermost(tmp_path):
    """The process settings of a compile (compiler/runtime.py): on for nested
    compiles and compiles that fail, back as they were after the outermost,
    and what the compiles made moved to the collector's oldest generation."""
    import gc

    from compiler import runtime
    was = gc.isenabled()
    gc.enable()
    try:
        with runtime.compiling():
            assert not gc.isenabled()
            with pytest.raises(CompileError):
                with runtime.compiling():
                    raise CompileError("a compile that fails")
            assert not gc.isenabled()
            # A compile inside still works, and frees what it made.
            compile_model(save(every_operator(np.random.default_rng(4)), tmp_path), "tiny",
                          input_range=EVERY_RANGE, reference=False)
            assert not gc.isenabled()
            made = [[n] for n in range(1000)]
        assert gc.isenabled() and runtime._depth == 0
        # What the compile left alive joined the oldest generation unscanned.
        assert gc.get_count()[0] < 1000
        oldest = {id(o) for o in gc.get_objects(generation=2)}
        assert all(id(o) in oldest for o in made)
        gc.disable()
        with runtime.compiling():
            pass
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
