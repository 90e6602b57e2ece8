"""FIFO bank and its BlockRamFIFOs on Amaranth's simulator: order, no loss, chaining, level."""

import numpy as np
import pytest

from helpers import ForkedBank, flat_words, pass_through, simulate, stream_get, stream_put
from neuflow_hdl.fifo_bank import FifoBank
from neuflow_hdl.regs import sample_layout
from neuflow_hdl.stream import BLOCK_RAM_FIFO_LATENCY, BlockRamFIFO

SAMPLE = sample_layout(16)


@pytest.fixture(scope="module")
def dut():
    return ForkedBank(count=3, depth=8)


def test_independent_fifos_keep_order_under_random_traffic(dut):
    rng = np.random.default_rng(7)
    data = [rng.integers(-30000, 30000, 200) for _ in range(3)]
    got = {}

    def feeder(n):
        async def feed(ctx):
            await stream_put(ctx, dut.i[n], flat_words(data[n]), rng, 0.4)
        return feed

    def drainer(n):
        async def drain(ctx):
            got[n] = await stream_get(ctx, dut.o[n], len(data[n]), rng, 0.5)
        return drain

    simulate(dut, *[feeder(n) for n in range(3)], *[drainer(n) for n in range(3)], cycles=5000)
    for n in range(3):
        assert [w[0] for w in got[n]] == data[n].tolist()


def test_chained_fifos_hold_count_times_depth(dut):
    """Chained, the three FIFOs of 8 buffer 22 words of one stream with the output stalled."""
    rng = np.random.default_rng(8)
    data = rng.integers(-30000, 30000, 100)
    got = {}

    async def bench(ctx):
        ctx.set(dut.chain, 0b110)
        accepted = 0
        for value in data[:30]:
            ctx.set(dut.i[0].payload, {"data": int(value), "eol": 0, "eof": 0})
            ctx.set(dut.i[0].valid, 1)
            _, _, ready = await ctx.tick().sample(dut.i[0].ready)
            accepted += ready
            if not ready:
                break
        ctx.set(dut.i[0].valid, 0)
        # FIFO 0 fills to its depth; a chained FIFO to a word short of it: its
        # credit allows for the lag of the router's fork (a cycle longer than
        # the chain's move, which reads the credit itself).
        assert accepted == 8 + 7 + 7, accepted
        assert ctx.get(dut.i[1].ready) == 0 and ctx.get(dut.o[0].valid) == 0

    simulate(dut, bench, cycles=200)

    async def feed(ctx):
        ctx.set(dut.chain, 0b110)
        await stream_put(ctx, dut.i[0], flat_words(data), rng, 0.3)

    async def drain(ctx):
        got["w"] = await stream_get(ctx, dut.o[2], len(data), rng, 0.5)

    simulate(dut, feed, drain, cycles=5000)
    assert [w[0] for w in got["w"]] == data.tolist()


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="depth"):
        FifoBank(count=2, depth=2)


def test_block_ram_fifo_counts_every_word_and_keeps_full_rate():
    """A BlockRamFIFO under random traffic: order kept, ``level`` always the
    words taken minus the words given (the credits of the router's sinks
    rely on it), up to ``depth``; then, with a consumer always ready, a
    word every cycle, the first BLOCK_RAM_FIFO_LATENCY cycles after it went in."""
    depth = 9
    fifo = BlockRamFIFO(SAMPLE, depth)
    rng = np.random.default_rng(11)
    data = rng.integers(-30000, 30000, 300)
    levels = []

    async def watch(ctx):
        taken = given = 0
        async for _, _, i_valid, i_ready, o_valid, o_ready, level in ctx.tick().sample(
                fifo.i.valid, fifo.i.ready, fifo.o.valid, fifo.o.ready, fifo.level):
            levels.append((level, taken - given))
            taken += i_valid & i_ready
            given += o_valid & o_ready

    assert pass_through(fifo, data, rng, gap=0.3, stall=0.5, cycles=5000, processes=[watch]) == data.tolist()
    assert all(level == held for level, held in levels)
    assert max(level for level, _ in levels) == depth     # it fills: the traffic tested a full FIFO

    async def stream(ctx):
        ctx.set(fifo.o.ready, 1)
        for k in range(40):
            ctx.set(fifo.i.payload, {"data": k, "eol": 0, "eof": 0})
            ctx.set(fifo.i.valid, 1)
            await ctx.tick()
        ctx.set(fifo.i.valid, 0)
        await ctx.tick().repeat(BLOCK_RAM_FIFO_LATENCY + 1)

    out = []

    async def collect(ctx):
        async for _, _, valid, payload in ctx.tick().sample(fifo.o.valid, fifo.o.payload):
            out.append(payload.data if valid else None)

    simulate(fifo, stream, cycles=100, processes=[collect])
    first = out.index(0)
    # out[k] is sampled after clock edge k + 1, and word 0's handshake is edge 1.
    assert first == BLOCK_RAM_FIFO_LATENCY
    assert out[first:first + 40] == list(range(40))
