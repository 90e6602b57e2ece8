"""The simulation build's register rewrite (sim/rtl/clocked.py): the same logic
as Amaranth's Verilog, proved by Yosys's equivalence checker, and blocks it
must not rewrite left alone."""

import pytest
from amaranth.back import verilog
from formal import equivalent

from neuflow_hdl.alu import StreamALU
from neuflow_hdl.mapper import Mapper
from neuflow_hdl.regs import sample_layout
from neuflow_hdl.stream import StreamFIFO
from sim.rtl.clocked import clocked_registers

pytestmark = pytest.mark.formal

UNITS = {"fifo": lambda: StreamFIFO(sample_layout(8), 4), "alu": StreamALU, "mapper": lambda: Mapper(segments=4)}


@pytest.mark.parametrize("unit", list(UNITS))
def test_clocked_registers_are_the_same_logic(unit, tmp_path):
    gold = verilog.convert(UNITS[unit](), name="top", emit_src=False)
    gate, rewritten = clocked_registers(gold)
    assert rewritten > 0 and gate.count("always @* begin") < gold.count("always @* begin")
    proved, log = equivalent(gold, gate, tmp_path)
    assert proved, log[-3000:]


def test_a_changed_register_is_not_the_same_logic(tmp_path):
    """The check can fail: the FIFO's output-valid register never set."""
    gold = verilog.convert(UNITS["fifo"](), name="top", emit_src=False)
    gate, _ = clocked_registers(gold)
    assert gate.count("r_rdy <= 1'h1;") == 1
    proved, _ = equivalent(gold, gate.replace("r_rdy <= 1'h1;", "r_rdy <= 1'h0;"), tmp_path)
    assert not proved


HOLD = """module top(clk, rst, en, d, q);
  input clk; input rst; input en; input [3:0] d; output [3:0] q;
  reg [3:0] q = 4'h0;
  reg [3:0] \\$1 ;
  always @(posedge clk)
    q <= \\$1 ;
  always @* begin
    if (\\$auto$verilog_backend.cc:2355:dump_module$0 ) begin end
    \\$1  = q;
    if (en) begin
      \\$1  = d;
    end
    if (rst) begin
      \\$1  = 4'h0;
    end
  end
endmodule
"""


def test_a_register_is_assigned_where_it_is_clocked():
    text, rewritten = clocked_registers(HOLD)
    assert rewritten == 1
    assert "always @*" not in text and "\\$1  = " not in text
    assert "    if (en) begin\n      q <= d;\n    end\n    if (rst) begin\n      q <= 4'h0;\n    end\n" in text


@pytest.mark.parametrize("change", [
    ("if (en) begin", "if (\\$1 [0]) begin"),               # a next value read in a condition
    ("\\$1  = d;", "\\$1  = d + \\$1 ;"),                     # ... or in a value
    ("endmodule", "  assign other = \\$1 ;\nendmodule"),    # used outside its block
    ("\\$1  = d;", "other = d;"),                           # the block computes something else
], ids=["read-in-condition", "read-in-value", "used-elsewhere", "other-target"])
def test_blocks_that_are_not_one_registers_next_value_stay(change):
    text = HOLD.replace(*change)
    assert clocked_registers(text) == (text, 0)
