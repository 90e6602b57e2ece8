"""Each operator built once on Verilator and checked through cocotb against
the numpy reference (see tests/cocotb/).  One build per configuration, shared
by every bench that uses it."""

import json
from pathlib import Path

import pytest

from helpers import ForkedBank
from neuflow_hdl.alu import StreamALU
from neuflow_hdl.convolver import Convolver
from neuflow_hdl.mapper import Mapper
from sim.rtl.verilator import build

pytestmark = [pytest.mark.verilator, pytest.mark.xdist_group("verilator-grid")]
BENCHES = Path(__file__).parent / "cocotb"


def run(design, module, **params):
    tests, failed = design.run(module, test_dir=BENCHES, env={"NEUFLOW_TB": json.dumps(params)})
    assert tests > 0, f"{module}: no cocotb test ran"
    assert failed == 0, f"{module}: {failed} of {tests} cocotb tests failed (see the log above)"


@pytest.fixture(scope="session")
def convolver_k3():
    dut = Convolver(kernel=3, max_width=32)
    return build(dut, "convolver_k3"), dut


@pytest.fixture(scope="session")
def convolver_k7():
    dut = Convolver(kernel=7, max_width=40)
    return build(dut, "convolver_k7"), dut


@pytest.fixture(scope="session")
def alu():
    return build(StreamALU(), "stream_alu")


@pytest.fixture(scope="session")
def mapper():
    return build(Mapper(segments=8), "mapper")


@pytest.fixture(scope="session")
def fifo_bank():
    return build(ForkedBank(count=3, depth=16), "fifo_bank")     # written as the router writes it


@pytest.mark.parametrize("config", ["convolver_k3", "convolver_k7"])
def test_convolver(config, request):
    design, dut = request.getfixturevalue(config)
    run(design, "tb_convolver", seed=dut.kernel, frames=150, kernel=dut.kernel,
        max_width=dut.max_width, latency=dut.latency)


def test_alu(alu):
    run(alu, "tb_alu", seed=11, words=400)


def test_mapper(mapper):
    run(mapper, "tb_mapper", seed=12, configs=30, words=300, segments=8)


def test_fifo_bank(fifo_bank):
    run(fifo_bank, "tb_fifo_bank", seed=13, count=3, words=2000)


@pytest.fixture(scope="session")
def grid_tiny():
    from neuflow_hdl.grid import Grid
    from neuflow_hdl.presets import preset
    config = preset("tiny")
    return build(Grid(config), "grid_tiny"), config


def test_grid_tiny(grid_tiny):
    design, c = grid_tiny
    run(design, "tb_grid", seed=21, runs=6, rows=c.rows, columns=c.columns, word_width=c.fmt.width,
        globals=c.globals_, fifos=c.fifos, kernel=c.kernel, max_width=c.max_width,
        segments=c.segments)


def test_grid_verilog_from_the_cli_is_lint_clean(tmp_path):
    """`neuflow verilog --grid tiny` writes Verilog that Verilator lints with no error."""
    import subprocess
    import sys
    from sim.rtl.verilator import verilator_env
    out = tmp_path / "grid.v"
    cli = subprocess.run([sys.executable, "-m", "sim.app.cli", "verilog", "--grid", "tiny",
                          "-o", str(out)], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    verilator_env()
    lint = subprocess.run(["verilator", "--lint-only", "-Wno-fatal", "--top-module", "grid", str(out)],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr[-2000:]
    assert "%Error" not in lint.stderr


def test_cli_reports_bad_presets_on_one_line():
    import subprocess
    import sys
    cli = subprocess.run([sys.executable, "-m", "sim.app.cli", "verilog", "--grid", "huge",
                          "-o", "/dev/null"], capture_output=True, text=True)
    assert cli.returncode == 2
    assert cli.stderr.strip() == ("neuflow: error: unknown grid preset 'huge'; known: tiny, "
                                  "ulx3s-85f, neuflow-v6")
