"""StreamALU on Amaranth's simulator against the numpy reference."""

import numpy as np
import pytest

from cases import alu_operands
from helpers import activate, flat_words, simulate, stream_get, stream_put
from neuflow_hdl.alu import StreamALU
from neuflow_hdl.numerics import Q8_8
from neuflow_hdl.regs import AluOp
from sim.golden import reference

@pytest.fixture(scope="module")
def dut():
    return StreamALU()


def run_alu(dut, cfg, a, b, rng, gap, stall):
    got = {}

    async def feed_a(ctx):
        ctx.set(dut.config, cfg)
        await stream_put(ctx, dut.a, flat_words(a), rng, gap)

    async def feed_b(ctx):
        if not cfg["b_const"] and cfg["op"] not in (AluOp.SQUARE, AluOp.ABS):
            await stream_put(ctx, dut.b, flat_words(b), rng, gap)

    async def drain(ctx):
        got["words"] = await stream_get(ctx, dut.o, len(a), rng, stall)

    simulate(dut, feed_a, feed_b, drain, cycles=20 * len(a) + 200)
    return np.array([w[0] for w in got["words"]])


@pytest.mark.parametrize("op", list(AluOp))
def test_streams_with_gaps_and_backpressure(dut, op):
    rng = np.random.default_rng(10 + op.value)
    a, b = alu_operands(rng, 400)
    for shift in (0, 8, 16):
        cfg = {"op": op, "b_const": 0, "shift": shift, "const": 0}
        got = run_alu(dut, cfg, a, b, rng, gap=0.3, stall=0.3)
        np.testing.assert_array_equal(got, reference.alu(op, a, b, shift=shift), err_msg=f"shift={shift}")


@pytest.mark.parametrize("op", [AluOp.ADD, AluOp.MUL, AluOp.DIV, AluOp.MAX])
def test_constant_operand(dut, op):
    rng = np.random.default_rng(30 + op.value)
    a, _ = alu_operands(rng, 200)
    for const in (0, -1, Q8_8.min, 300):
        cfg = {"op": op, "b_const": 1, "shift": 8, "const": const}
        got = run_alu(dut, cfg, a, None, rng, gap=0.2, stall=0.2)
        np.testing.assert_array_equal(got, reference.alu(op, a, const, shift=8))


def test_full_rate(dut):
    """One result per cycle with no gaps and no back-pressure (DIV included)."""
    rng = np.random.default_rng(5)
    a, b = alu_operands(rng, 64)
    for op, latency in ((AluOp.DIV, dut.latency), (AluOp.ADD, dut.fast_latency)):
        cfg = {"op": op, "b_const": 0, "shift": 8, "const": 0}
        cycles = {}

        async def bench(ctx):
            ctx.set(dut.config, cfg)
            ctx.set(dut.o.ready, 1)
            await ctx.tick()            # the configuration's check is a register
            n_in = n_out = cycle = 0
            while n_out < len(a):
                more = n_in < len(a)
                ctx.set(dut.a.valid, more)
                ctx.set(dut.b.valid, more)
                if more:
                    ctx.set(dut.a.payload, {"data": int(a[n_in]), "eol": 0, "eof": 0})
                    ctx.set(dut.b.payload, {"data": int(b[n_in]), "eol": 0, "eof": 0})
                _, _, ready, valid = await ctx.tick().sample(dut.a.ready, dut.o.valid)
                if more:
                    assert ready
                    n_in += 1
                n_out += valid
                cycle += 1
            cycles["n"] = cycle

        simulate(dut, bench, cycles=1000)
        assert cycles["n"] == len(a) + latency


def test_mismatched_flags_and_bad_shift_raise_error(dut):
    async def bench(ctx):
        ctx.set(dut.config, {"op": AluOp.ADD, "b_const": 0, "shift": 0, "const": 0})
        ctx.set(dut.b.valid, 1)             # so an operand taken on the rewind's cycle would show
        await activate(ctx, dut, dut.a)
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.a.payload, {"data": 1, "eol": 1, "eof": 0})
        ctx.set(dut.b.payload, {"data": 1, "eol": 0, "eof": 0})
        ctx.set(dut.a.valid, 1)
        ctx.set(dut.b.valid, 1)
        await ctx.tick()
        ctx.set(dut.a.valid, 0)
        ctx.set(dut.b.valid, 0)
        assert ctx.get(dut.error)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        assert ctx.get(dut.error)           # the rewind's cycle clears it
        await ctx.tick()
        assert not ctx.get(dut.error)
        # A bad shift, made active by a start as a tile does: no operand is
        # taken from the cycle after it.
        ctx.set(dut.config, {"op": AluOp.ADD, "b_const": 1, "shift": 17, "const": 0})
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.a.valid, 1)
        for _ in range(2):                  # the rewind, then the check
            _, _, ready, error = await ctx.tick().sample(dut.a.ready, dut.error)
            assert ready == 0
        assert error == 1

    simulate(dut, bench, cycles=200)
