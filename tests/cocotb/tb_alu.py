"""cocotb bench: the StreamALU on Verilator against the numpy reference."""

import cocotb
import numpy as np

from cases import alu_operands
from neuflow_hdl.regs import ALU_CONFIG, AluOp
from sim.golden import reference
from streams import Port, exchange, params, start

P = params()
W = P.get("word_width", 16)


async def run(dut, cfg, a, b, rng, gap, stall):
    dut.config.value = ALU_CONFIG.const(cfg).as_bits()
    pa, pb, po = Port(dut, "a", W), Port(dut, "b", W), Port(dut, "o", W)
    sources = {pa: [(int(v), 0, 0) for v in a]}
    if not cfg["b_const"] and cfg["op"] not in (AluOp.SQUARE, AluOp.ABS):
        sources[pb] = [(int(v), 0, 0) for v in b]
    got, _ = await exchange(dut, sources, {po: len(a)}, rng=rng, gap=gap, stall=stall)
    return np.array([w[0] for w in got[po]])


@cocotb.test()
async def every_operation_random_operands(dut):
    await start(dut)
    rng = np.random.default_rng(P["seed"])
    checked = 0
    for op in AluOp:
        for shift in (0, 4, 8, 16):
            a, b = alu_operands(rng, P["words"])
            cfg = {"op": op, "b_const": 0, "shift": shift, "const": 0}
            got = run(dut, cfg, a, b, rng, float(rng.uniform(0, 0.5)), float(rng.uniform(0, 0.5)))
            got = await got
            np.testing.assert_array_equal(got, reference.alu(op, a, b, shift=shift),
                                          err_msg=f"{op.name} shift={shift}")
            checked += len(a)
    dut._log.info("alu: %d results bit-exact", checked)


@cocotb.test()
async def constant_operand(dut):
    await start(dut)
    rng = np.random.default_rng(P["seed"] + 1)
    for op in (AluOp.ADD, AluOp.SUB, AluOp.MUL, AluOp.DIV, AluOp.MIN):
        for const in (0, -1, -32768, 32767, 384):
            a, _ = alu_operands(rng, 100)
            cfg = {"op": op, "b_const": 1, "shift": 8, "const": const}
            got = await run(dut, cfg, a, None, rng, 0.2, 0.3)
            np.testing.assert_array_equal(got, reference.alu(op, a, const, shift=8))
