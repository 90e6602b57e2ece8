"""The registered product: behaviour against numpy, and the ECP5 block it becomes."""

import re

import numpy as np
from amaranth.back import rtlil
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from helpers import simulate
from neuflow_hdl.dsp import MULTIPLIER_LATENCY, registered_product


class _Product(wiring.Component):
    """registered_product of two 16-bit factors, as a component."""

    a: In(signed(16))
    b: In(signed(16))
    take: In(1)
    keep: In(1)
    p: Out(signed(32))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.p.eq(registered_product(m, platform, self.a, self.b, self.take, self.keep, "product"))
        return m


def test_the_product_of_the_factors_taken_comes_two_cycles_later():
    """Random 16-bit factors offered every cycle, taken on random cycles (and
    kept a cycle later): ``MULTIPLIER_LATENCY`` cycles after each take, ``p``
    is the product of the factors taken."""
    assert MULTIPLIER_LATENCY == 2
    rng = np.random.default_rng(3)
    a = rng.integers(-(1 << 15), 1 << 15, 400)
    b = rng.integers(-(1 << 15), 1 << 15, 400)
    b[:4] = -(1 << 15)                      # the extremes: (-2^15)^2 needs all 32 bits
    a[:2] = -(1 << 15)
    take = rng.random(400) < 0.6
    dut = _Product()

    async def bench(ctx):
        checked = 0
        for n in range(len(a)):
            ctx.set(dut.a, int(a[n]))
            ctx.set(dut.b, int(b[n]))
            ctx.set(dut.take, int(take[n]))
            ctx.set(dut.keep, int(n > 0 and take[n - 1]))
            if n >= 2 and take[n - 2]:          # cycle n, two after the take
                assert ctx.get(dut.p) == int(a[n - 2]) * int(b[n - 2]), n
                checked += 1
            await ctx.tick()
        assert checked > 200

    simulate(dut, bench, cycles=1000)


def test_on_an_ecp5_it_is_one_mult18x18d_with_its_own_registers():
    text = rtlil.convert(_Product(), platform=ULX3S_85F_Platform())
    assert "$mul" not in text
    cells = re.findall(r"cell \\MULT18X18D .*?\n\s*end", text, re.S)
    assert len(cells) == 1
    for register in ("INPUTA", "INPUTB", "OUTPUT"):
        assert re.search(rf'parameter \\REG_{register}_CLK "CLK0"', cells[0]), register
    assert re.search(r'parameter \\REG_PIPELINE_CLK "NONE"', cells[0])


def test_elsewhere_it_is_registers_and_a_product():
    text = rtlil.convert(_Product())
    assert "MULT18X18D" not in text and len(re.findall(r"cell \$mul ", text)) == 1
