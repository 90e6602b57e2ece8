"""Untrusted input: every bad model, array, shape or path is refused by the
``neuflow`` command with exit 2 and one line naming it, never a traceback,
never a numpy warning followed by a result, never a wrong answer with exit 0."""

import warnings

import numpy as np
import pytest
from onnx import helper

from compiler import CompileError
from compiler.pipeline import compile_model
from onnx_models import EVERY_RANGE, every_operator, model, save
from sim.app.cli import main


def _one_line_error(capsys, argv, *needles):
    """``argv`` exits 2 with one line on stderr holding every needle."""
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # a numpy warning is a failure here
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("neuflow: error:") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def compiled_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled")
    path = save(every_operator(np.random.default_rng(4)), out)
    assert main(["compile", str(path), "-o", str(out / "net"), "-q", "--no-reference",
                 "--input-range", str(EVERY_RANGE)]) == 0
    return out / "net"


@pytest.mark.parametrize("name,array,needle", [
    ("nan", np.full((1, 2, 8, 8), np.nan), "NaN or infinite"),
    ("inf", np.where(np.eye(8) > 0, np.inf, 0.0)[None, None].repeat(2, 1), "NaN or infinite"),
    ("complex", np.zeros((1, 2, 8, 8), complex), "complex128"),
    ("strings", np.array([["a"] * 8] * 8), "<U1"),
    ("empty", np.zeros((0, 2, 8, 8)), "empty batch"),
    ("shape", np.zeros((1, 3, 8, 8)), "(N, 2, 8, 8)"),
])
def test_bad_input_arrays(compiled_dir, tmp_path, capsys, name, array, needle):
    np.save(tmp_path / "x.npy", array)
    _one_line_error(capsys, ["simulate", str(compiled_dir), "--input", str(tmp_path / "x.npy"),
                             "--output", str(tmp_path / "y.npy")], needle)


def test_object_arrays_are_not_loaded(compiled_dir, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.array([object(), 1], dtype=object), allow_pickle=True)
    _one_line_error(capsys, ["simulate", str(compiled_dir), "--input", str(tmp_path / "x.npy"),
                             "--output", str(tmp_path / "y.npy")], "not a .npy array")


def _simulate_warns(compiled_dir, tmp_path, capsys, x):
    """``simulate`` on ``x`` succeeds; its argv and what it wrote to stderr."""
    np.save(tmp_path / "x.npy", x)
    argv = ["simulate", str(compiled_dir), "--input", str(tmp_path / "x.npy"),
            "--output", str(tmp_path / "y.npy")]
    capsys.readouterr()
    assert main(argv) == 0
    return argv, capsys.readouterr().err


def test_saturating_input_is_counted_and_strict_refuses_it(compiled_dir, tmp_path, capsys):
    """Q8.8 holds -128 .. 127.996: 300 and -1000 saturate, 127.99 and -128.001 do not."""
    x = np.zeros((2, 2, 8, 8))
    x[0, 0, 0, :4] = [300.0, -1000.0, 127.99, -128.001]
    argv, err = _simulate_warns(compiled_dir, tmp_path, capsys, x)
    assert "2 of 256 input values saturate (largest magnitude 1000" in err, err
    assert "4 of 256 input values lie outside ±3, the range the compiler's error bounds" in err, err
    _one_line_error(capsys, argv + ["--strict"], "--strict", "2 of 256")


def test_inputs_beyond_the_declared_range_are_counted(compiled_dir, tmp_path, capsys):
    """Compiled for inputs within ±3: 3.5 is counted (not saturated), -3 is not."""
    x = np.zeros((1, 2, 8, 8))
    x[0, 1, 2, :2] = [3.5, -3.0]
    argv, err = _simulate_warns(compiled_dir, tmp_path, capsys, x)
    assert "1 of 128 input values lie outside ±3" in err and "saturate" not in err, err
    _one_line_error(capsys, argv + ["--strict"], "--strict", "outside ±3")
    import json
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "image.npy").write_bytes((compiled_dir / "image.npy").read_bytes())
    manifest = json.loads((compiled_dir / "manifest.json").read_text())
    for bad in ("3", -1.0, None, True):
        manifest["input"]["range"] = bad
        (edited / "manifest.json").write_text(json.dumps(manifest))
        _one_line_error(capsys, ["simulate", str(edited), "--input", str(tmp_path / "x.npy"),
                                 "--output", str(tmp_path / "y.npy")], "manifest.json", "range")


def test_a_bound_that_says_nothing_is_refused(tmp_path, capsys):
    """Over the whole Q8.8 input range the LRN's worst-case error is larger than
    anything its output format holds: compile refuses the layer by name rather
    than print a bound that bounds nothing.  Declared (or calibrated) input
    ranges make the bound mean something, and the manifest records it."""
    import json
    path = save(every_operator(np.random.default_rng(4)), tmp_path)
    _one_line_error(capsys, ["compile", str(path), "-o", str(tmp_path / "out"), "--no-reference"],
                    "layer 'l1' (LRN): its error bound", "output format's range ±128",
                    "--input-range")
    assert main(["compile", str(path), "-o", str(tmp_path / "out"), "-q", "--input-range", "2.5"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["input"]["range"] == 2.5
    assert all(layer["error_bound"] < 128 for layer in manifest["layers"])
    x = np.random.default_rng(5).normal(0, 1, (4, 2, 8, 8))
    np.save(tmp_path / "cal.npy", x)
    assert main(["compile", str(path), "-o", str(tmp_path / "cal"), "-q",
                 "--calibration", str(tmp_path / "cal.npy")]) == 0
    manifest = json.loads((tmp_path / "cal" / "manifest.json").read_text())
    assert manifest["input"]["range"] == pytest.approx(np.abs(x).max())
    for bad in ("0", "-1", "inf", "nan", "two"):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(["compile", str(path), "-o", str(tmp_path / "x"), "--input-range", bad])
        assert exit_.value.code == 2
        assert "--input-range" in capsys.readouterr().err


def test_output_paths(compiled_dir, tmp_path, capsys):
    path = save(every_operator(np.random.default_rng(4)), tmp_path)
    (tmp_path / "a_file").write_text("")
    _one_line_error(capsys, ["compile", str(path), "-o", str(tmp_path / "a_file"), "--no-reference",
                             "--input-range", str(EVERY_RANGE)], "a_file", "cannot write")
    np.save(tmp_path / "x.npy", np.zeros((1, 2, 8, 8)))
    _one_line_error(capsys, ["simulate", str(compiled_dir), "--input", str(tmp_path / "x.npy"),
                             "--output", str(tmp_path / "missing" / "y.npy")], "cannot write")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.json").write_text((compiled_dir / "manifest.json").read_text())
    _one_line_error(capsys, ["simulate", str(tmp_path / "half"), "--input", str(tmp_path / "x.npy"),
                             "--output", str(tmp_path / "y.npy")], "not a compiled directory")


def _conv_model(w, in_shape, out_shape, **attrs):
    return model([helper.make_node("Conv", ["x", "w"], ["y"], name="the_conv", **attrs)],
                 in_shape, out_shape, [("w", w)])


@pytest.mark.parametrize("case", ["nan-weights", "inf-weights", "bn-zero-variance",
                                  "kernel-over-padded-input", "empty-input-dimension",
                                  "row-broadcast"])
def test_bad_models_are_refused_by_name(tmp_path, capsys, case):
    if case in ("nan-weights", "inf-weights"):
        w = np.zeros((1, 1, 3, 3))
        w[0, 0, 1, 1] = np.nan if case == "nan-weights" else np.inf
        m, needle = _conv_model(w, (1, 1, 6, 6), (1, 1, 4, 4)), "node 'the_conv' (Conv): 1 of 9"
    elif case == "bn-zero-variance":
        inits = [("s", np.ones(2)), ("b", np.zeros(2)), ("m", np.zeros(2)), ("v", np.array([1.0, 0.0]))]
        m = model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                                    name="bn", epsilon=0.0)], (1, 2, 4, 4), (1, 2, 4, 4), inits)
        needle = "node 'bn' (BatchNormalization): variance + epsilon must be positive"
    elif case == "kernel-over-padded-input":
        m = _conv_model(np.ones((1, 1, 5, 5)), (1, 1, 3, 3), (1, 1, 1, 1), pads=[0, 0, 1, 1])
        needle = "node 'the_conv' (Conv): kernel 5x5 larger than the padded input 4x4"
    elif case == "row-broadcast":
        m = model([helper.make_node("Add", ["x", "row"], ["y"], name="add_row")], (1, 2, 3, 4),
                  (1, 2, 3, 4), [("row", np.arange(4.0).reshape(1, 1, 1, 4))])
        needle = "node 'add_row' (Add): constant operand of shape (1, 1, 1, 4): only scalars"
    else:
        m = model([helper.make_node("Relu", ["x"], ["y"], name="r")], (1, 2, 0, 4), (1, 2, 0, 4))
        needle = "empty dimension"
    path = save(m, tmp_path)
    _one_line_error(capsys, ["compile", str(path), "-o", str(tmp_path / "out")], needle)


def test_checker_errors_name_the_node(tmp_path, capsys):
    bad = model([helper.make_node("Relu", ["x"], ["y"], name="bad_relu")], (1, 1, 4, 4), (1, 1, 4, 4))
    bad.graph.node[0].attribute.append(helper.make_attribute("foo", 1))
    _one_line_error(capsys, ["compile", str(save(bad, tmp_path)), "-o", str(tmp_path / "out")],
                    "invalid ONNX model: node 'bad_relu' (Relu)")


@pytest.mark.parametrize("opset,axis,ok", [(13, None, False), (13, 1, True), (13, -3, True),
                                           (11, None, True), (11, 2, False)])
def test_softmax_axis_follows_onnx(tmp_path, opset, axis, ok):
    """Opset 13's default axis -1 on an N x C x 1 x 1 tensor is a softmax over a
    size-1 axis (every output 1): refused; axis 1 is the features; before
    opset 13 the default axis 1 flattens the features."""
    rng = np.random.default_rng(0)
    attrs = {} if axis is None else {"axis": axis}
    m = model([helper.make_node("Conv", ["x", "w"], ["c"]),
               helper.make_node("Softmax", ["c"], ["y"], name="sm", **attrs)],
              (1, 2, 3, 3), (1, 4, 1, 1), [("w", rng.normal(0, 0.3, (4, 2, 3, 3)))], opset=opset)
    path = save(m, tmp_path)
    if ok:
        compiled = compile_model(path, "tiny")
        assert compiled.graph.host_softmax
    else:
        with pytest.raises(CompileError, match=r"node 'sm' \(Softmax\): softmax over axis"):
            compile_model(path, "tiny")


def test_compile_refuses_an_error_beyond_its_bound(tmp_path, capsys):
    """Weights that push the float output past Q8.8's range: the reference
    engine saturates, the measured error exceeds the bound, and compile says so
    instead of printing both and exiting 0 (with --no-reference it compiles)."""
    w = np.full((1, 1, 3, 3), 40.0)
    path = save(_conv_model(w, (1, 1, 5, 5), (1, 1, 3, 3)), tmp_path)
    _one_line_error(capsys, ["compile", str(path), "-o", str(tmp_path / "out")],
                    "layer 'the_conv': error against onnxruntime", "exceeds the compiler's bound",
                    "saturation")
    assert main(["compile", str(path), "-o", str(tmp_path / "out"), "-q", "--no-reference"]) == 0


def test_an_escaped_bug_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    import compiler.pipeline
    monkeypatch.setattr(compiler.pipeline, "quantise", lambda *a: 1 / 0)
    path = save(every_operator(np.random.default_rng(0)), tmp_path)
    capsys.readouterr()
    assert main(["compile", str(path), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ZeroDivisionError" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["compile", str(path), "-o", str(tmp_path / "out"), "--debug"])


@pytest.mark.parametrize("name,node,inits", [
    ("clip-inverted", helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="c"),
     [("lo", np.array(1.0)), ("hi", np.array(-0.5))]),
    ("leaky-slope-3", helper.make_node("LeakyRelu", ["x"], ["y"], name="l", alpha=3.0), []),
    ("leaky-slope-minus-2", helper.make_node("LeakyRelu", ["x"], ["y"], name="l", alpha=-2.0), []),
])
def test_exact_activations_stay_within_their_bound(tmp_path, name, node, inits):
    """Clip with min > max is max everywhere (ONNX); LeakyRelu slopes beyond the
    mapper's default slope range get a smaller shift: the mapper is exact, the
    bound is a few steps, and the output matches onnxruntime within it."""
    from compiler.artefacts import write_outputs
    from compiler.onnx_reference import run_onnx
    from sim.app.verify import verify_directory
    m = model([node], (1, 1, 4, 4), (1, 1, 4, 4), inits)
    compiled = compile_model(save(m, tmp_path), "tiny")
    (layer,) = compiled.layers
    assert layer.notes[0].endswith("max error 0"), layer.notes
    assert layer.error_bound < 0.01
    write_outputs(compiled, tmp_path / "out")
    x = np.random.default_rng(1).normal(0, 10, (2, 1, 4, 4))
    x = np.clip(x, -40, 40)                 # 3 x 40 stays inside Q8.8
    got = verify_directory(tmp_path / "out", x).outputs
    assert np.abs(got - run_onnx(m, x)["y"]).max() <= layer.error_bound



def test_an_activation_the_mapper_cannot_fit_is_refused(tmp_path, capsys):
    """LRN with bias 0.01 and beta 3 divides by (0.01 + s) ** 3: no 8-segment
    mapper comes within its tolerance, so compile refuses the node instead of
    printing a bound larger than what the layer can output."""
    m = model([helper.make_node("LRN", ["x"], ["y"], name="steep", size=1, alpha=1.0, beta=3.0,
                                bias=0.01)], (1, 2, 4, 4), (1, 2, 4, 4))
    _one_line_error(capsys, ["compile", str(save(m, tmp_path)), "-o", str(tmp_path / "out")],
                    "node 'steep' (LRN): activation", "more than its tolerance")


@pytest.mark.parametrize("attrs,needle", [
    ({"size": 3, "bias": 0.0}, "bias 0 must be positive"),
    ({"size": 3, "alpha": -1.0}, "alpha -1 must be at least 0"),
    ({"size": 0}, "size 0 must be at least 1"),
    ({"size": 3, "beta": float("inf")}, "beta inf must be finite"),
])
def test_an_lrn_outside_its_domain_is_refused(tmp_path, capsys, attrs, needle):
    """(bias + alpha * s) ** -beta is a number for every input only with bias
    > 0 and alpha >= 0: anything else is refused by name, not fitted with
    numpy warnings."""
    m = model([helper.make_node("LRN", ["x"], ["y"], name="norm", **attrs)], (1, 2, 4, 4), (1, 2, 4, 4))
    _one_line_error(capsys, ["compile", str(save(m, tmp_path)), "-o", str(tmp_path / "out")],
                    "node 'norm' (LRN):", needle)


def test_parallel_options(compiled_dir, tmp_path, capsys):
    """--jobs takes a whole number of at least 1 (argparse's usage error, exit 2);
    --dask with no scheduler there is one line naming the address."""
    np.save(tmp_path / "x.npy", np.zeros((2, 2, 8, 8)))
    argv = ["simulate", str(compiled_dir), "--input", str(tmp_path / "x.npy"),
            "--output", str(tmp_path / "y.npy")]
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exit_:
            main(argv + ["--jobs", bad])
        assert exit_.value.code == 2
        assert "--jobs" in capsys.readouterr().err
    pytest.importorskip("distributed")
    _one_line_error(capsys, argv + ["--dask", "tcp://127.0.0.1:9"], "tcp://127.0.0.1:9",
                    "cannot reach the scheduler")
    assert main(argv + ["--jobs", "2", "-q"]) == 0
