"""Partitioned runs: a network's layers as independent pieces on the RTL (each
from a reference checkpoint, with a resume stub), in parallel on threads or on a
Dask cluster; and the module sharing that keeps big grids' builds small."""

from pathlib import Path

import numpy as np
import pytest

from compiler.pipeline import compile_model
from compiler.pieces import Resumable, pieces
from sim.app.partition import CUT_CYCLES, TOLERANCE, run_partitioned, run_piece
from sim.app.verify import verify
from sim.rtl.runner import soc_build
from sim.rtl.share import share_modules

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def digits():
    compiled = compile_model(ROOT / "models" / "digits.onnx", "tiny", reference=False)
    x = np.random.default_rng(3).normal(0, 1, compiled.graph.input_shape[1:]).astype(np.float32)
    return compiled, x


@pytest.fixture(scope="module")
def whole(digits):
    """The whole run's per-layer cycles (one image, one simulation)."""
    soc_build("tiny")
    compiled, x = digits
    result = verify(compiled.manifest(), compiled.image, x[None], "rtl")
    assert result.bit_exact
    return result.images[0].layer_cycles


def _agree(pieces_cycles, whole_cycles, cuts=None):
    """Each layer's cycles as pieces within the tolerance of the whole run's
    (``cuts``: per layer, the cuts inside it, each allowed CUT_CYCLES more)."""
    for n, (a, b) in enumerate(zip(pieces_cycles, whole_cycles)):
        inside = (cuts or {}).get(n, 0)
        assert abs(a - b) <= TOLERANCE * b + CUT_CYCLES * inside, f"layer {n}: pieces {a}, whole run {b}"
        assert inside or a == b or cuts is None, f"layer {n}: pieces {a}, whole run {b}"


@pytest.mark.verilator
def test_one_piece_per_layer_is_bit_exact_and_adds_up(digits, whole):
    compiled, x = digits
    run = run_partitioned(compiled, x, workers=2)
    assert run.bit_exact, [p.mismatch for p in run.pieces]
    assert [(p.first, p.stop) for p in run.pieces] == [(n, n + 1) for n in range(len(compiled.layers))]
    assert len(run.layer_cycles) == len(whole)
    _agree(run.layer_cycles, whole)


@pytest.mark.verilator
def test_cuts_make_runs_of_layers(digits, whole):
    compiled, x = digits
    run = run_partitioned(compiled, x, cuts=[2], workers=1)
    assert [(p.first, p.stop) for p in run.pieces] == [(0, 2), (2, len(compiled.layers))]
    assert run.bit_exact
    _agree(run.layer_cycles, whole)


@pytest.mark.verilator
def test_a_wrong_piece_is_reported(digits):
    """The check compares the piece's whole data memory with the reference: a
    reference word changed by one must show up as a mismatch at its address."""
    compiled, x = digits
    from compiler.artefacts import input_image
    piece = pieces(Resumable.of(compiled), input_image(compiled.image, compiled.manifest(), x),
                   cuts=[1, 2])[1]
    output = compiled.buffers[compiled.layers[1].output]
    at = output.base + output.size // 2
    piece.expected[at] ^= 1
    run = run_piece("tiny", piece)
    assert run.mismatch is not None and f"{at:#x}" in run.mismatch


@pytest.mark.verilator
def test_pieces_and_images_on_a_dask_cluster(digits, whole):
    """The same pieces on a local Dask cluster: the same cycles, bit-exact; and a
    batch of images there gives what it gives on this machine's threads."""
    distributed = pytest.importorskip("distributed")
    compiled, x = digits
    batch = np.random.default_rng(5).normal(0, 1, (3, *x.shape)).astype(np.float32)
    local = verify(compiled.manifest(), compiled.image, batch, "rtl", workers=2)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        done = []
        run = run_partitioned(compiled, x, dask=client, done=lambda: done.append(1))
        remote = verify(compiled.manifest(), compiled.image, batch, "rtl", dask=client)
    assert run.bit_exact
    assert len(done) == len(compiled.layers)
    _agree(run.layer_cycles, whole)
    assert remote.bit_exact and local.bit_exact
    np.testing.assert_array_equal(remote.outputs, local.outputs)
    assert [r.layer_cycles for r in remote.images] == [r.layer_cycles for r in local.images]


@pytest.mark.verilator
def test_pieces_inside_layers(digits, whole, monkeypatch):
    """With a resume point every few passes, the program is the same (labels
    only), long layers run as several pieces that each resume and stop inside
    the layer, bit-exact, and their parts add up to each layer's cycles."""
    import compiler.codegen as codegen
    compiled, x = digits
    monkeypatch.setattr(codegen, "RESUME_EVERY", 1500)
    fine = compile_model(ROOT / "models" / "digits.onnx", "tiny", reference=False)
    np.testing.assert_array_equal(fine.image, compiled.image)
    inside = [p for p in fine.points if p.pass_]
    assert inside and len(fine.points) == len(compiled.layers) + len(inside)
    run = run_partitioned(fine, x, workers=2)
    assert run.bit_exact, [p.mismatch for p in run.pieces]
    assert len(run.pieces) == len(fine.points)
    split = {p.segments[0][0] for p in run.pieces if fine.points[p.first].pass_ or
             (p.stop < len(fine.points) and fine.points[p.stop].pass_)}
    assert split == {p.layer for p in inside}
    cuts = {}
    for p in inside:
        cuts[p.layer] = cuts.get(p.layer, 0) + 1
    _agree(run.layer_cycles, whole, cuts)
    with_cuts = run_partitioned(fine, x, cuts=[2], workers=2)
    assert [(p.segments[0][0], p.segments[-1][0]) for p in with_cuts.pieces] == \
        [(0, 1), (2, len(compiled.layers) - 1)]


@pytest.mark.verilator
def test_pieces_inside_looped_layers(digits):
    """Every run of passes rolled into a loop over its table and a resume point
    every few passes: a resume point starts a loop (the loop sets its own
    registers), so pieces that resume and stop inside looped layers are still
    bit-exact against the reference engine."""
    import compiler.codegen as codegen
    _, x = digits
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codegen, "RESUME_EVERY", 1500)
        patch.setattr(codegen, "ROLL_ALWAYS", 0)
        looped = compile_model(ROOT / "models" / "digits.onnx", "tiny", reference=False)
    lines = looped.source.split("\n")
    starts = [lines[lines.index(f"{p.label}:") + 1].split() for p in looped.points if p.pass_]
    assert starts and all(words[:2] == ["li", "r4,"] for words in starts)    # each starts a loop
    run = run_partitioned(looped, x, workers=2)
    assert run.bit_exact, [p.mismatch for p in run.pieces]
    assert len(run.pieces) == len(looped.points)


def test_cuts_are_checked(digits):
    compiled, x = digits
    from compiler import CompileError
    with pytest.raises(CompileError, match="cuts"):
        pieces(Resumable.of(compiled), compiled.image, cuts=[0])


SHARED = """/* header */

(* generator = "Amaranth" *)
module top(clk, a, y);
  input clk;
  \\top.left  left (
    .a(a)
  );
  \\top.right  right (
    .a(a)
  );
  \\top.odd  \\join  (
    .a(a)
  );
endmodule

(* generator = "Amaranth" *)
module \\top.left (a);
  reg \\$auto$verilog_backend.cc:2355:dump_module$1  = 0;
  assign y = a + 1;
endmodule

(* generator = "Amaranth" *)
module \\top.right (a);
  reg \\$auto$verilog_backend.cc:2355:dump_module$2  = 0;
  assign y = a + 1;
endmodule

(* generator = "Amaranth" *)
module \\top.odd (a);
  assign y = a + 2;
endmodule
"""


def test_share_modules_keeps_one_of_each_identical_module():
    text, before, after = share_modules(SHARED, separate=10)
    assert (before, after) == (4, 3)
    assert "module \\top.right" not in text and "module \\top.left" in text
    assert text.count("\\top.left  left (") == 1 and "\\top.left  right (" in text
    assert "\\top.odd  \\join  (" in text                 # a distinct module is left alone
    assert text.startswith("/* header */")
    assert text.count("no_inline_module") == 1            # the shared one, not the others


@pytest.mark.verilator
def test_simulate_pieces_from_a_compiled_directory(tmp_path, capsys):
    """neuflow simulate --pieces: the compiled directory's states.json resumes
    every layer; the output equals the whole run's; a batch, the reference
    engine, or a states.json out of shape is refused in one line."""
    import json
    from sim.app.cli import main
    out = tmp_path / "net"
    assert main(["compile", str(ROOT / "models" / "digits.onnx"), "--grid", "tiny", "-o", str(out),
                 "-q", "--no-reference"]) == 0
    x = np.random.default_rng(8).normal(0, 1, (1, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = ["simulate", str(out), "--input", str(tmp_path / "x.npy"), "--engine", "rtl", "-q"]
    assert main(run + ["--output", str(tmp_path / "whole.npy")]) == 0
    assert main(run + ["--output", str(tmp_path / "pieces.npy"), "--pieces", "--jobs", "2"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "pieces.npy"), np.load(tmp_path / "whole.npy"))

    def refused(argv, *needles):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and all(n in err for n in needles), err

    np.save(tmp_path / "x2.npy", np.concatenate([x, x]))
    refused(["simulate", str(out), "--input", str(tmp_path / "x2.npy"), "--output", str(tmp_path / "y.npy"),
             "--engine", "rtl", "--pieces"], "one image")
    refused(["simulate", str(out), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"),
             "--pieces"], "--engine rtl")
    states = json.loads((out / "states.json").read_text())
    bad_kernel = dict(states[0], state=dict(states[0]["state"], loaded=[[0, [99999] * 49]]))
    for bad, needle in ((states[:-1], "resume points of"),
                        (states[1:] + states[:1], "program order"),
                        ([bad_kernel] + states[1:], "loaded entry"),
                        ([dict(states[0], layer=-1)] + states[1:], "resume point is an object"),
                        ("not json", "states.json")):
        (out / "states.json").write_text(bad if isinstance(bad, str) else json.dumps(bad))
        refused(run + ["--output", str(tmp_path / "y.npy"), "--pieces"], "states.json", needle)
