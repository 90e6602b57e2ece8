"""The synthesis flow's pieces that need no place and route: the pin wrapper, the
report, and the yosys commands that keep replica registers apart."""

import json
import re
import sys

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from boards.synth import (KEEP_REPLICAS, PinWrapper, SynthReport, _critical_path, _place_and_route, dsp_sites,
                          floorplan_multipliers, run_tool, yosys_command)
from neuflow_hdl.stream import replica
from helpers import simulate


class _Pair(wiring.Component):
    """Two input ports and two output ports: ``x`` registered, ``y`` the sum."""

    a: In(3)
    b: In(2)
    x: Out(3)
    y: Out(4)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.x.eq(self.a)
        m.d.comb += self.y.eq(self.a + self.b)
        return m


def test_pin_wrapper_shifts_every_input_in_and_xors_every_output():
    dut = PinWrapper(_Pair())
    bits = [1, 0, 1, 1, 0, 1, 1, 0, 0, 1]

    def parity(value):
        return bin(value).count("1") % 2

    async def bench(ctx):
        history = []
        for n, bit in enumerate(bits):
            ctx.set(dut.sin, bit)
            a, b = ctx.get(dut.component.a), ctx.get(dut.component.b)
            x, y = ctx.get(dut.component.x), ctx.get(dut.component.y)
            if n >= 5:      # the chain is Cat(a, b), the newest bit in a[0]
                assert a == bits[n - 1] | bits[n - 2] << 1 | bits[n - 3] << 2
                assert b == bits[n - 4] | bits[n - 5] << 1
                assert y == a + b
            history.append(x | y << 3)
            await ctx.tick()
            if n >= 1:      # outputs registered, then their XOR registered
                assert ctx.get(dut.sout) == parity(history[n - 1])

    simulate(dut, bench, cycles=100)


def test_critical_path_names_the_longest_path_and_splits_its_delay():
    def step(kind, src, dst, delay):
        return {"type": kind, "from": {"cell": src}, "to": {"cell": dst}, "delay": delay}

    short = {"path": [step("clk-to-q", "r1", "r1", 0.5), step("routing", "r1", "r2", 1.0)]}
    long = {"path": [step("clk-to-q", "w", "w", 0.5), step("routing", "w", "dsp", 4.0),
                     step("logic", "dsp", "dsp", 3.0), step("routing", "dsp", "p", 2.5)]}
    assert _critical_path([short, long]) == "w -> p: 10.0 ns (3.0 logic, 6.5 routing, 4 steps)"
    assert _critical_path([]) is None
    # The reset pin's path into the clock domain is no clock's critical path.
    clock = "posedge $glbnet$clk"
    reset = {"from": "<async>", "to": clock, "path": [step("source", "rst", "rst", 0.0),
                                                       step("routing", "rst", "ff", 12.0)]}
    assert _critical_path([dict(long, **{"from": clock, "to": clock}), reset]).startswith("w -> p: 10.0 ns")
    assert _critical_path([reset]).startswith("rst -> ff: 12.0 ns")


_NEXTPNR_LOG = """\
Info: Device utilisation:
Info: \t          TRELLIS_FF:    3778/  83640     4%
Info: \t        TRELLIS_COMB:    9141/  83640    10%
Info: \t          MULT18X18D:       2/    156     1%
Info: iter=0 steplen=0.875495 a=1.000000 penalty=[0.00, 0.00, 0.00, 0.00]
Info: iter=99 steplen=1.721682 a=259.886505 penalty=[25.32, 25.32, 25.32, 25.32]
Info: iter=100 steplen=1.721682 a=259.886505 penalty=[25.32, 25.32, 25.32, 25.32]
Info: Running simulated annealing placer for refinement.
Info: Max frequency for clock '$glbnet$clk': 56.32 MHz (PASS at 50.00 MHz)
Info:     iter=1 wires=152811 overused=12063 overuse=14813 archfail=NA
Info:     iter=2 wires=155955 overused=0 overuse=0 archfail=0
Info: Max frequency for clock '$glbnet$clk': 51.97 MHz (PASS at 50.00 MHz)
"""


def _fake_nextpnr(tmp_path, exit_code=0):
    script = tmp_path / "fake_nextpnr.py"
    script.write_text(f"import sys\nsys.stdout.write({_NEXTPNR_LOG!r})\nsys.exit({exit_code})\n")
    return [sys.executable, str(script)]


def test_place_and_route_reads_utilisation_placement_and_router_progress(tmp_path):
    lines = []
    run = _place_and_route(_fake_nextpnr(tmp_path), tmp_path / "log", route_minutes=60, progress=lines.append)
    assert run.routed and run.iterations == 2 and run.overused == 0
    assert run.placed_fmax == 56.32
    assert run.utilisation == {"TRELLIS_FF": 3778, "TRELLIS_COMB": 9141, "MULT18X18D": 2}
    assert (tmp_path / "log").read_text() == _NEXTPNR_LOG
    assert any("12063 wires overused" in line for line in lines)
    assert [line for line in lines if "placer iteration" in line] == [
        "synth: placing, static placer iteration 0", "synth: placing, static placer iteration 100"]


def test_place_and_route_stops_routing_at_the_time_limit(tmp_path):
    lines = []
    run = _place_and_route(_fake_nextpnr(tmp_path), tmp_path / "log", route_minutes=0, progress=lines.append)
    assert not run.routed and run.iterations == 1 and run.overused == 12063
    assert lines[-1] == "synth: routing stopped after 0 min"


def test_place_and_route_failure_names_the_log(tmp_path):
    with pytest.raises(RuntimeError, match="nextpnr failed .exit 3.; end of .*log"):
        _place_and_route(_fake_nextpnr(tmp_path, exit_code=3), tmp_path / "log", route_minutes=60,
                         progress=lambda line: None)


def test_report_table_says_when_the_design_is_not_routed():
    report = SynthReport(design="grid", lut4=100, flip_flops=50, mult18=3, dp16kd=1, fmax_mhz=41.6,
                         seconds=10, routed=False, overused_wires=512, router_iterations=9)
    table = report.table()
    assert "41.6 MHz estimated after placement; NOT ROUTED: 512 wires still overused after 9" in table
    assert "fits: yes" in table


def _netlist(path, multipliers):
    """A yosys-style netlist of MULT18X18D cells: ``(name, source line)`` pairs
    (a string: the cell's whole ``src``, as an instantiated cell's has no column)."""
    cells = {name: {"type": "MULT18X18D",
                    "attributes": {"src": line if isinstance(line, str) else
                                   f"grid.v:{line}.3-{line}.40|dsp_map.v:9.1"}}
             for name, line in multipliers}
    cells["dut.tile_0_0.convolver.x_TRELLIS_FF_Q"] = {"type": "TRELLIS_FF", "attributes": {}}
    path.write_text(json.dumps({"modules": {"grid": {"attributes": {"top": "1"}, "cells": cells}}}))


def test_floorplan_gives_each_tile_a_band_of_dsp_columns(tmp_path):
    netlist = tmp_path / "grid.json"
    names = []
    for tile in ("0_2", "0_0", "0_1"):          # any order in the netlist
        names += [(f"dut.tile_{tile}.alu.multiplier.dsp", "neuflow_hdl/dsp.py:66")]      # an Instance
        names += [(f"dut.tile_{tile}.convolver.${n}_MULT18X18D_P9", 100 + n) for n in range(49)]
        names += [(f"dut.tile_{tile}.mapper.$7_MULT18X18D_P9", 50)]
    _netlist(netlist, names)
    assert floorplan_multipliers(netlist) == 153
    cells = json.loads(netlist.read_text())["modules"]["grid"]["cells"]
    sites = {bel: (x, y) for x, y, bel in dsp_sites()}
    bels = {name: cells[name]["attributes"]["BEL"] for name, _ in names}
    assert len(set(bels.values())) == 153 and set(bels.values()) <= set(sites)
    assert "BEL" not in cells["dut.tile_0_0.convolver.x_TRELLIS_FF_Q"]["attributes"]
    columns = {tile: sorted({sites[b][0] for n, b in bels.items() if f"tile_{tile}." in n})
               for tile in ("0_0", "0_1", "0_2")}
    # West to east in tile order, 17 columns each, every tile in all three DSP rows.
    assert columns["0_0"][-1] < columns["0_1"][0] and columns["0_1"][-1] < columns["0_2"][0]
    assert all(len(c) == 17 for c in columns.values())
    # Products row-major from the band's first row: a kernel row shares a DSP row.
    conv = [bels[f"dut.tile_0_1.convolver.${n}_MULT18X18D_P9"] for n in range(49)]
    placed = [sites[b] for b in conv]
    assert placed == sorted(placed, key=lambda xy: (xy[1], xy[0]))
    assert placed[0] == (columns["0_1"][0], 10)          # the convolver before the ALU
    assert {sites[b][1] for b in conv[:14]} == {10}


def test_floorplan_leaves_a_design_with_too_many_multipliers_alone(tmp_path):
    netlist = tmp_path / "grid.json"
    _netlist(netlist, [(f"dut.tile_0_0.convolver.${n}_MULT18X18D_P9", n) for n in range(157)])
    before = netlist.read_text()
    assert floorplan_multipliers(netlist) == 0
    assert netlist.read_text() == before


def test_seed_summary_gives_min_median_max_of_the_routed_seeds():
    from boards.synth import seed_summary

    def report(seed, fmax, routed=True):
        return SynthReport(design="grid", lut4=1, flip_flops=1, mult18=1, dp16kd=1, fmax_mhz=fmax, seconds=1.0,
                           routed=routed, seed=seed)

    text = seed_summary([report(1, 44.6), report(2, 51.0), report(3, 47.2), report(4, 60.0, routed=False)])
    assert "4 placer seed(s) (1, 2, 3, 4)" in text
    assert "min 44.6 / median 47.2 / max 51.0 MHz (3 routed)" in text
    assert seed_summary([report(1, 30.0, routed=False)]).endswith("none routed")


@pytest.mark.parametrize("argv", [["synth"], ["synth", "--grid", "tiny", "--unit", "alu"]],
                         ids=["neither", "both"])
def test_synth_takes_a_grid_or_one_unit(argv, capsys):
    from sim.app.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["neuflow: error: give either --grid PRESET or --unit UNIT"]


def test_a_failing_yosys_run_quotes_the_log_yosys_writes(tmp_path):
    """yosys writes its own log (``-l``), and a failure quotes its end: the
    console output was empty when yosys crashed under ``-q``."""
    with pytest.raises(RuntimeError, match=r"(?s)yosys failed \(exit 1\).*missing\.v"):
        run_tool(yosys_command("read_verilog missing.v", "yosys.log"), tmp_path / "yosys.console", "yosys",
                 cwd=tmp_path, quote=tmp_path / "yosys.log")
    assert "ERROR" in (tmp_path / "yosys.log").read_text()


class _Replicas(wiring.Component):
    """One strobe registered twice, as two users would (``replica``)."""

    a: In(1)
    x: Out(1)
    y: Out(1)

    def elaborate(self, platform):
        m = Module()
        first, second = replica(reset_less=True), replica(reset_less=True)
        m.d.sync += [first.eq(self.a), second.eq(self.a)]
        m.d.comb += [self.x.eq(first), self.y.eq(second)]
        return m


@pytest.mark.parametrize("keep", [True, False])
def test_replicas_stay_apart_through_synth_ecp5(tmp_path, keep):
    """With ``KEEP_REPLICAS`` both replica registers are flip-flops after
    ``synth_ecp5``; without it yosys merges them into one."""
    dut = _Replicas()
    (tmp_path / "replicas.v").write_text(verilog.convert(dut, name="replicas"))
    extra = f"{KEEP_REPLICAS}; " if keep else ""
    run_tool(yosys_command(f"read_verilog replicas.v; {extra}synth_ecp5 -top replicas; tee -o stat.txt stat",
                           "yosys.log"), tmp_path / "yosys.console", "yosys", cwd=tmp_path,
             quote=tmp_path / "yosys.log")
    flip_flops = [int(n) for n in re.findall(r"^\s+(\d+)\s+TRELLIS_FF\s*$", (tmp_path / "stat.txt").read_text(),
                                             re.M)]
    assert flip_flops == [2 if keep else 1]
