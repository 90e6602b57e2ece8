"""The synthesis flow's pieces that need no FPGA tools: the pin wrapper and the report."""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from boards.synth import PinWrapper, _critical_path
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
