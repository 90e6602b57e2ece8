"""Compiled networks on the Verilator model of the whole processor: bit for bit
equal to the reference engine on every layer, cycle estimates within 15%."""

import sys
from pathlib import Path

import numpy as np
import pytest

from compiler.artefacts import write_outputs
from compiler.pipeline import compile_model
from onnx_models import EVERY_RANGE, every_operator, save
from sim.app.verify import verify
from sim.rtl.runner import soc_build

pytestmark = [pytest.mark.verilator, pytest.mark.xdist_group("verilator-soc")]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny():
    soc_build("tiny")
    return "tiny"


def _run_both(compiled, manifest, x):
    """Run ``x`` (one image or a batch) through the verify loop on the RTL: every
    layer bit for bit equal to the reference engine."""
    result = verify(manifest, compiled.image, x, "rtl")
    assert result.bit_exact, result.first_mismatch
    return result


def test_digits_network_bit_exact_and_estimates(tiny, tmp_path):
    sys.path.insert(0, str(ROOT / "models"))
    from train_digits import split
    _, _, x_test, y_test = split()
    compiled = compile_model(ROOT / "models" / "digits.onnx", "tiny", reference=False)
    manifest = write_outputs(compiled, tmp_path)
    result = _run_both(compiled, manifest, x_test[:3])
    for i, run in enumerate(result.images):
        assert np.argmax(run.output) == y_test[i]
        for layer, cycles in zip(manifest["layers"], run.layer_cycles):
            assert abs(layer["estimated_cycles"] - cycles) <= 0.15 * cycles, (layer["name"], cycles)


def test_every_operator_network_bit_exact(tiny, tmp_path):
    m = every_operator(np.random.default_rng(1))
    compiled = compile_model(save(m, tmp_path), "tiny", input_range=EVERY_RANGE, reference=False)
    manifest = write_outputs(compiled, tmp_path / "out")
    x = np.random.default_rng(9).normal(0, 1, (2, 8, 8))
    _run_both(compiled, manifest, x)


def test_every_pass_rolled_into_loops(tiny, tmp_path, monkeypatch):
    """Every run of passes rolled into a loop over its configuration table
    (``cfgwt``): bit-exact on the RTL, and each layer's estimate, loops
    priced, within 5% of the measurement."""
    from compiler import codegen
    monkeypatch.setattr(codegen, "ROLL_ALWAYS", 0)
    m = every_operator(np.random.default_rng(1))
    compiled = compile_model(save(m, tmp_path), "tiny", input_range=EVERY_RANGE, reference=False)
    assert compiled.source.count("cfgwt") >= 5
    manifest = write_outputs(compiled, tmp_path / "out")
    result = _run_both(compiled, manifest, np.random.default_rng(9).normal(0, 1, (2, 8, 8)))
    for layer, cycles in zip(manifest["layers"], result.images[0].layer_cycles):
        assert abs(layer["estimated_cycles"] - cycles) <= 0.05 * cycles + 8, (layer["name"], cycles)


def test_weight_frame_first_when_every_port_streams(tiny, tmp_path, monkeypatch):
    """With no port kept for weight frames, a pass whose data use every port
    streams the next pass's frame first, on its own: still bit-exact, and the
    softmax output within 0.01 of onnxruntime's (as in test_compiler)."""
    from compiler import schedule
    from compiler.onnx_reference import run_onnx
    monkeypatch.setattr(schedule, "_weight_port", lambda job: 0)
    m = every_operator(np.random.default_rng(1))
    compiled = compile_model(save(m, tmp_path), "tiny", input_range=EVERY_RANGE, reference=False)
    assert "weight frame first" in compiled.source
    manifest = write_outputs(compiled, tmp_path / "out")
    x = np.random.default_rng(9).normal(0, 1, (2, 8, 8))
    result = _run_both(compiled, manifest, x)
    want = run_onnx(m, x[None])[m.graph.output[0].name][0]
    assert np.abs(result.images[0].output - want).max() < 0.01   # probabilities


def test_line_shared_across_chain_positions(tiny, tmp_path):
    """out0 = conv(x0) + conv(x1), out1 = conv(x1) with one kernel (no weight
    port): one pass, and x1 feeds out0's second link and out1's head, so out0's
    link takes it through its FIFO bank.  Bit-exact, estimate within 15%."""
    from onnx import helper
    from onnx_models import model
    rng = np.random.default_rng(3)
    k = rng.normal(0, 0.2, (3, 3))
    w = np.zeros((2, 2, 3, 3))
    w[0, 0] = w[0, 1] = w[1, 1] = k
    m = model([helper.make_node("Conv", ["x", "w"], ["y"])], (1, 2, 20, 24), (1, 2, 18, 22),
              [("w", w)])
    compiled = compile_model(save(m, tmp_path), "tiny", input_range=EVERY_RANGE, reference=False)
    (layer,) = compiled.layers
    assert len(layer.passes) == 1
    assert sum("fifo_0_in" in t.routes for t in layer.passes[0].tiles) == 1
    manifest = write_outputs(compiled, tmp_path / "out")
    result = _run_both(compiled, manifest, rng.normal(0, 1, (2, 20, 24)))
    (cycles,) = result.images[0].layer_cycles
    assert abs(manifest["layers"][0]["estimated_cycles"] - cycles) <= 0.15 * cycles


def test_pytorch_export_end_to_end(tiny, tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed (it is not a dependency); "
                                "the ONNX path it exports through is tested above")
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(48, 4))
    path = tmp_path / "torch.onnx"
    torch.onnx.export(net, torch.zeros(1, 1, 8, 8), str(path))
    compiled = compile_model(path, "tiny", reference=False)
    manifest = write_outputs(compiled, tmp_path / "out")
    _run_both(compiled, manifest, np.random.default_rng(3).normal(0, 1, (1, 8, 8)))
