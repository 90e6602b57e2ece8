"""Where the cycles go: the split of each pass's MAC slots by cause adds up to
the cost model's estimate, matches a hand computation, and the report draws it."""

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import helper

from compiler.artefacts import write_outputs
from compiler.cost import PassCost, pass_cycles
from compiler.pipeline import compile_model
from compiler.utilisation import CAUSES, layer_split, pass_split
from neuflow_hdl.presets import preset
from onnx_models import model, save

ROOT = Path(__file__).resolve().parent.parent


def test_a_pass_split_by_hand():
    """tiny: 4 tiles of 7 x 7 = 196 slots a cycle.  A pass of two convolvers,
    1,000 MACs, 100-word data streams, latency 10, a 300-word weight frame
    beside them, 50 bus beats, 5 overlapped instructions, 3 in series, two polls
    (each 4 cycles more for its configuration read), 14 for the ports' start
    and drain:
    pass_cycles = 3 x 4 + max(100 + 10, 300, 50 + 5 + 10) + 4 // 2 + 2 x 4 + 14 = 336."""
    config = preset("tiny")
    cost = PassCost(streams=(100, 80), latency=10, frame=(300,), serial=3, overlapped=5, waits=2, beats=50)
    assert pass_cycles(cost) == 336
    p = SimpleNamespace(macs=1000, tiles=[SimpleNamespace(convolver={}), SimpleNamespace(convolver={}),
                                          SimpleNamespace(convolver=None)])
    split = pass_split(p, cost, config)
    assert split == {"useful": 1000,
                     "border and padding": 2 * 49 * 100 - 1000,
                     "unused tiles": 2 * 49 * 100,
                     "drain and control": (336 - 100 - 190) * 196,    # the frame's 190 beyond the data
                     "weight frames": 190 * 196,
                     "memory bus": 0}
    assert sum(split.values()) == 336 * 196
    # Bus-bound: 400 beats and 5 fetches beyond the 110 cycles of data.
    bus = PassCost(streams=(100,), latency=10, beats=400, overlapped=5, waits=1)
    split = pass_split(SimpleNamespace(macs=0, tiles=[]), bus, config)
    assert split["memory bus"] == (400 + 5 + 10 - 110) * 196
    assert sum(split.values()) == pass_cycles(bus) * 196


@pytest.mark.parametrize("path,grid", [("models/digits.onnx", "tiny")])
def test_layers_split_into_their_estimate(path, grid):
    compiled = compile_model(ROOT / path, grid, reference=False)
    slots = compiled.config.convolver_macs
    for layer in compiled.layers:
        split = layer_split(layer, compiled.config)
        assert set(split) == set(CAUSES)
        assert all(value >= 0 for value in split.values()), (layer.name, split)
        assert sum(split.values()) == layer.cycles * slots, layer.name
        assert split["useful"] == sum(p.macs for p in layer.passes)


def test_report_draws_where_the_cycles_go(tmp_path):
    """write_outputs writes the two pictures and the table; names from the model
    with '$' (matplotlib's maths) and letters a font may lack are drawn as plain
    text, with no warning."""
    w = np.random.default_rng(1).normal(0, 0.3, (2, 1, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="$\\frac{a}{", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="ρελου✓")]
    path = save(model(nodes, (1, 1, 8, 8), (1, 2, 8, 8), [("w", w)]), tmp_path)
    compiled = compile_model(path, "tiny", reference=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_outputs(compiled, tmp_path / "out")
    for name in ("cycles.png", "roofline.png"):
        data = (tmp_path / "out" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Where the cycles go" in report and "(cycles.png)" in report
    assert "| **all** |" in report


def test_pictures_neither_warn_nor_leak(tmp_path, monkeypatch):
    """Drawing may warn (matplotlib does when long labels leave the axes no
    room; the fuzzer's 2,000-case run found it): the pictures are still
    written, no warning escapes (the command's output stays clean) and no
    figure outlives its file, however many networks a process writes."""
    from matplotlib import _pylab_helpers
    from matplotlib.figure import Figure
    draw = Figure.savefig

    def crowded(self, *args, **kwargs):
        warnings.warn("constrained_layout not applied because axes sizes collapsed to zero")
        return draw(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", crowded)
    compiled = compile_model(ROOT / "models" / "digits.onnx", "tiny", reference=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for n in range(25):
            write_outputs(compiled, tmp_path / f"out{n}")
    assert (tmp_path / "out24" / "cycles.png").stat().st_size > 1000
    assert (tmp_path / "out24" / "roofline.png").stat().st_size > 1000
    assert not _pylab_helpers.Gcf.get_all_fig_managers()


def test_no_schedule_beats_the_stream_bound(tmp_path):
    """The 80x60 scene-parsing network on neuflow-v6: the stream bound (every
    term's input map through a tile at a word a cycle) by hand, and the
    compiler's estimate above it, its useful and border slots within it."""
    import onnx
    from sim.app.bench_compiler import scene_parsing, stream_bound
    words = 16 * 1 * 60 * 80 + 64 * 8 * 27 * 37 + 256 * 32 * 10 * 15     # conv1, conv2, conv3 inputs
    config = preset("neuflow-v6")
    assert stream_bound(60, 80, config.tiles) == words / 14
    path = tmp_path / "scene.onnx"
    onnx.save(scene_parsing(60, 80, np.random.default_rng(3)), path)
    compiled = compile_model(path, "neuflow-v6", reference=False)
    assert sum(layer.cycles for layer in compiled.layers) > words / 14
    slots = sum(layer_split(layer, config)[cause] for layer in compiled.layers
                for cause in ("useful", "border and padding"))
    assert slots <= words * config.kernel ** 2
