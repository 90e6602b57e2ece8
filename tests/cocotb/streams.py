"""cocotb helpers: reset, clock, and a one-coroutine driver that moves words
through any number of Amaranth stream ports with random valid gaps and random
back-pressure, checking the handshake on every cycle."""

import json
import os

from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


def params():
    """The bench parameters pytest passed in NEUFLOW_TB (JSON)."""
    return json.loads(os.environ.get("NEUFLOW_TB", "{}"))


class Port:
    """A ``lib.stream`` port of the Verilog top: ``NAME__valid/ready/payload``."""

    def __init__(self, dut, name, width):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.name, self.width = name, width

    def __eq__(self, other):
        return isinstance(other, Port) and (self.name, self.valid) == (other.name, other.valid)

    def __hash__(self):
        return hash(self.name)

    def pack(self, word):
        data, eol, eof = word
        return (data & ((1 << self.width) - 1)) | (eol << self.width) | (eof << (self.width + 1))

    def unpack(self, bits):
        data = bits & ((1 << self.width) - 1)
        if data >> (self.width - 1):
            data -= 1 << self.width
        return data, (bits >> self.width) & 1, (bits >> (self.width + 1)) & 1


async def start(dut):
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def exchange(dut, sources, sinks, *, rng=None, gap=0.0, stall=0.0, max_cycles=1_000_000):
    """Send ``sources`` ({Port: [words]}) and collect ``sinks`` ({Port: count}).

    Inputs are driven after the falling edge and the handshake is judged on
    settled values (ReadOnly) just before the rising edge that performs it.
    Returns ``(words, stamps)``: {sink: [words]} and {port: [cycle of each
    handshake]} for sources and sinks alike (cycle 0 is the first driven one).
    """
    pending = {port: list(words) for port, words in sources.items()}
    offered = {port: False for port in sources}
    got = {port: [] for port in sinks}
    stamps = {port: [] for port in [*sources, *sinks]}
    cycles = 0
    while any(pending.values()) or any(offered.values()) or \
            any(len(got[p]) < n for p, n in sinks.items()):
        for port in sources:
            if not offered[port] and pending[port] and not (rng is not None and rng.random() < gap):
                port.payload.value = port.pack(pending[port].pop(0))
                offered[port] = True
            port.valid.value = int(offered[port])
        taking = {}
        for port, count in sinks.items():
            taking[port] = len(got[port]) < count and not (rng is not None and rng.random() < stall)
            port.ready.value = int(taking[port])
        await ReadOnly()
        for port in sources:
            if offered[port] and port.ready.value:
                offered[port] = False
                stamps[port].append(cycles)
        for port in sinks:
            if taking[port] and port.valid.value:
                got[port].append(port.unpack(int(port.payload.value)))
                stamps[port].append(cycles)
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        cycles += 1
        assert cycles < max_cycles, f"no progress after {cycles} cycles: {[p.name for p in sinks]}"
    for port in sources:
        port.valid.value = 0
    for port in sinks:
        port.ready.value = 0
    return got, stamps
