"""Design sweeps: networks x grid presets on the RTL, on threads or a Dask cluster."""

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from neuflow_hdl.presets import preset
from sim.app.cli import main
from sim.app.sweep import run_point, sweep

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits.onnx"
GRIDS = ("tiny", "ulx3s-85f")


def _too_big():
    """A fully connected layer of 300,000 weights: more than the small presets' memory."""
    w = numpy_helper.from_array(np.zeros((500, 600), np.float32), "w")
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1, name="fc")
    graph = helper.make_graph([node], "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 600])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 500])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@pytest.mark.verilator
def test_a_sweep_on_a_dask_cluster():
    """digits on two presets on a local Dask cluster: every point bit-exact against
    the reference engine, estimates within 5 % of the RTL, and the same cycles as
    the same points on this machine's threads."""
    distributed = pytest.importorskip("distributed")
    models = {"digits": DIGITS.read_bytes()}
    local = sweep(models, GRIDS, workers=2)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        done = []
        remote = sweep(models, GRIDS, dask=client, done=lambda: done.append(1))
    assert len(done) == len(GRIDS)
    assert [(p.model, p.grid) for p in remote] == [("digits", g) for g in GRIDS]
    for here, there in zip(local, remote):
        assert there.ran and there.mismatch is None, there
        assert abs(there.estimate_off) < 0.05, (there.grid, there.estimated, there.measured)
        assert there.measured == here.measured and there.cycles == here.cycles
        assert there.cycles >= sum(there.measured) > 0
    # The two presets run the same program, each at its own preset's clock.
    by_grid = {p.grid: p for p in remote}
    assert preset("tiny").clock_mhz != preset("ulx3s-85f").clock_mhz
    assert all(by_grid[g].clock_mhz == preset(g).clock_mhz for g in ("tiny", "ulx3s-85f"))


def test_a_network_a_preset_cannot_take_is_a_refused_point():
    point = run_point("big", _too_big(), "tiny", 0)
    assert not point.ran and "memory" in point.refused
    assert point.as_json()["refused"] == point.refused


@pytest.mark.verilator
def test_the_sweep_command(tmp_path, capsys):
    out = tmp_path / "points.json"
    big = tmp_path / "big.onnx"
    big.write_bytes(_too_big())
    assert main(["sweep", str(DIGITS), str(big), "--grids", "tiny", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "refused:" in text and "digits" in text
    points = json.loads(out.read_text())
    assert [(p["model"], p["grid"]) for p in points] == [("digits", "tiny"), ("big", "tiny")]
    assert points[0]["mismatch"] is None and points[0]["cycles"] > 0
    assert points[1]["refused"]


@pytest.mark.parametrize("grids, needle", [("tiny,nope", "nope is not a preset"), (",", "none given")])
def test_sweep_grids_are_checked(grids, needle, capsys):
    assert main(["sweep", str(DIGITS), "--grids", grids]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_sweep_jobs_are_checked(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["sweep", str(DIGITS), "--jobs", "0"])
    assert stop.value.code == 2 and "whole number" in capsys.readouterr().err


def test_sweep_models_are_checked(tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert main(["sweep", str(broken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.onnx" in err[0]
    assert main(["sweep", str(tmp_path / "missing.onnx")]) == 2
    assert main(["sweep", str(DIGITS), str(tmp_path / "x" / "digits.onnx")]) == 2
    assert "two models are called digits" in capsys.readouterr().err
