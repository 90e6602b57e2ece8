"""cocotb entry point of the runner: reset, run the SoC to halt with no Python
in the per-cycle loop, record the halt code and cycle count."""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer


@cocotb.test()
async def run_to_halt(dut):
    params = json.loads(os.environ["NEUFLOW_RUN"])
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    if not int(dut.halted.value):
        await First(RisingEdge(dut.halted), Timer(params["max_cycles"] * 10, unit="ns"))
    halted = int(dut.halted.value)
    await ClockCycles(dut.clk, 2)           # the memory dumps itself on the halt edge
    with open(params["result"], "w") as out:
        json.dump({"halted": halted, "halt_code": int(dut.halt_code.value),
                   "cycles": int(dut.cycles.value)}, out)
