"""Streamer on Amaranth's simulator: concurrent ports through the arbiter to a
memory with random latency, started one by one or by a start mask; every word
once, in order, at the right address; out-of-window descriptors touch nothing."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from cases import frame_flags
from helpers import memory_process, simulate, stream_get, stream_put
from neuflow_hdl.cfgbus import RESPONDER_READ_LATENCY
from neuflow_hdl.regs import (PORT_STATUS, PORT_STATUS_REG, PORTS_START_REG, PORTS_STATUS,
                              PORTS_STATUS_REG, stream_port_writes,
                              streamer_address)
from neuflow_hdl.streamer import BusArbiter, Streamer

WORDS, BEAT, PORTS, LINES = 1 << 12, 4, 3, 4


class Harness(wiring.Component):
    """Streamer + arbiter, exposing the merged memory bus."""

    def __init__(self):
        self.streamer = Streamer(ports=PORTS, globals_=LINES, memory_words=WORDS, beat_words=BEAT)
        self.arbiter = BusArbiter(PORTS, addr_width=10, beat_words=BEAT)
        super().__init__({"memory": wiring.Out(self.arbiter.memory.signature)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.streamer, m.submodules.arbiter = self.streamer, self.arbiter
        for p in range(PORTS):
            wiring.connect(m, self.streamer.bus[p], self.arbiter.initiator[p])
        wiring.connect(m, self.arbiter.memory, wiring.flipped(self.memory))
        return m


@pytest.fixture(scope="module")
def dut():
    return Harness()


async def configure(ctx, streamer, writes):
    """Write ``writes`` and return once the streamer's input register has
    passed the last of them on (:mod:`neuflow_hdl.cfgbus`)."""
    for address, word in writes:
        ctx.set(streamer.cfg.addr.as_value(), address)
        ctx.set(streamer.cfg.wdata, word)
        ctx.set(streamer.cfg.we, 1)
        await ctx.tick()
    ctx.set(streamer.cfg.we, 0)
    await ctx.tick()


async def port_status(ctx, streamer, port, reg=PORT_STATUS_REG, layout=PORT_STATUS):
    ctx.set(streamer.cfg.addr.as_value(), streamer_address(port, reg))
    ctx.set(streamer.cfg.re, 1)
    await ctx.tick()
    ctx.set(streamer.cfg.re, 0)
    for _ in range(RESPONDER_READ_LATENCY - 1):
        await ctx.tick()
    return layout.from_bits(ctx.get(streamer.cfg.rdata))


async def ports_status(ctx, streamer):
    """PORTS_STATUS: every port at once."""
    return await port_status(ctx, streamer, 0, PORTS_STATUS_REG, PORTS_STATUS)


def rectangle(memory, base, width, height, stride):
    return np.array([[memory[base + r * stride + c] for c in range(width)] for r in range(height)])


def test_concurrent_ports_every_word_once_in_order(dut):
    rng = np.random.default_rng(1)
    st = dut.streamer
    for trial in range(3):
        memory = rng.integers(0, 1 << 16, WORDS)
        before = memory.copy()
        # Two readers (odd bases and strides: beats are shared between rows) and a writer.
        a = dict(base=int(rng.integers(0, 200)), width=int(rng.integers(1, 30)), height=int(rng.integers(1, 9)))
        a["stride"] = a["width"] + int(rng.integers(0, 7))
        b = dict(base=1000 + int(rng.integers(0, 50)), width=int(rng.integers(1, 20)), height=5, stride=23)
        c = dict(base=2001, width=int(rng.integers(1, 25)), height=6)
        c["stride"] = c["width"] + 3
        frame_a = rectangle(memory, **a)
        frame_b = rectangle(memory, **b)
        frame_c = rng.integers(-32768, 32768, (c["height"], c["width"]))
        got = {}

        async def control(ctx):
            masked = trial > 0      # started by PORTS_START_REG writes: ports 0 and 1, then 2
            writes = (stream_port_writes(0, line=1, start=not masked, **a) +
                      stream_port_writes(1, line=3, start=not masked, **b) +
                      stream_port_writes(2, line=0, write=True, start=not masked, **c))
            if masked:
                writes.append((streamer_address(0, PORTS_START_REG), 0b011))
            await configure(ctx, st, writes)
            if masked:      # port 2 (the writer) waits for its own bit
                status = await port_status(ctx, st, 2)
                assert not status.busy and not status.done, status
                await configure(ctx, st, [(streamer_address(0, PORTS_START_REG), 0b100)])
                assert (await port_status(ctx, st, 2)).busy
            assert (await ports_status(ctx, st)).busy
            words = [(int(v), *f) for v, f in zip(frame_c.ravel(), frame_flags(frame_c.shape))]
            await stream_put(ctx, st.from_grid[0], words, rng, 0.3)
            while st_busy(ctx):
                await ctx.tick()
            for port in range(PORTS):
                status = await port_status(ctx, st, port)
                assert status.done and not status.error and not status.busy, (port, status)
            status = await ports_status(ctx, st)
            assert not status.busy and not status.error, status

        def st_busy(ctx):
            return ctx.get(st.busy)

        def reader(line, count, key):
            async def bench(ctx):
                got[key] = await stream_get(ctx, st.to_grid[line], count, rng, 0.4)
            return bench

        simulate(dut, control, reader(1, frame_a.size, "a"), reader(3, frame_b.size, "b"),
                 processes=[memory_process(dut.memory, memory, rng, BEAT)], cycles=20_000)
        for key, frame in (("a", frame_a), ("b", frame_b)):
            signed = np.where(frame >= 1 << 15, frame - (1 << 16), frame)
            assert [w[0] for w in got[key]] == signed.ravel().tolist(), key
            assert [w[1:] for w in got[key]] == frame_flags(frame.shape), key
        written = rectangle(memory, **c)
        np.testing.assert_array_equal(np.where(written >= 1 << 15, written - (1 << 16), written), frame_c)
        touched = np.zeros(WORDS, bool)
        for r in range(c["height"]):
            touched[c["base"] + r * c["stride"]:c["base"] + r * c["stride"] + c["width"]] = True
        np.testing.assert_array_equal(memory[~touched], before[~touched])


@pytest.mark.parametrize("width, height, stride", [(7, 9, 7), (1, 13, 1), (5, 6, 9), (1, 11, 3)])
def test_reader_reads_each_beat_of_a_run_once(dut, width, height, stride):
    """A contiguous rectangle (``stride == width``) is one run of words: each
    beat it touches is read once, although its short rows share beats; any
    other rectangle is read row by row.  The words and flags are the
    rectangle's either way (random back-pressure and memory latency)."""
    rng = np.random.default_rng(width * 100 + stride)
    st = dut.streamer
    memory = rng.integers(0, 1 << 16, WORDS)
    base = 301
    frame = rectangle(memory, base, width, height, stride)
    if stride == width:         # hand-computed: the beats of one run
        beats = list(range(base // BEAT, (base + width * height - 1) // BEAT + 1))
    else:                       # those of each row, in order
        beats = [b for r in range(height)
                 for b in range((base + r * stride) // BEAT, (base + r * stride + width - 1) // BEAT + 1)]
    reads, got = [], {}

    async def control(ctx):
        await configure(ctx, st, stream_port_writes(1, base=base, width=width, height=height, stride=stride,
                                                    line=2))
        while ctx.get(st.busy):
            await ctx.tick()
        status = await port_status(ctx, st, 1)
        assert status.done and not status.error, status

    async def reader(ctx):
        got["words"] = await stream_get(ctx, st.to_grid[2], frame.size, rng, 0.4)

    simulate(dut, control, reader, processes=[memory_process(dut.memory, memory, rng, BEAT, reads=reads)],
             cycles=5_000)
    signed = np.where(frame >= 1 << 15, frame - (1 << 16), frame)
    assert [w[0] for w in got["words"]] == signed.ravel().tolist()
    assert [w[1:] for w in got["words"]] == frame_flags(frame.shape)
    assert reads == beats


def test_out_of_window_descriptors_touch_nothing(dut):
    rng = np.random.default_rng(2)
    st = dut.streamer
    memory = rng.integers(0, 1 << 16, WORDS)
    before = memory.copy()
    bad = [
        dict(base=100, width=10, height=10, window_base=100, window_size=99),     # last row outside
        dict(base=99, width=4, height=1, window_base=100, window_size=1000),      # starts before
        dict(base=WORDS - 4, width=8, height=1),                                  # past memory
        dict(base=4, width=4, height=2, stride=WORDS),                            # row 2 past memory
        dict(base=0, width=4, height=3, stride=(1 << 32) - 2),                    # wraps 32 bits
        dict(base=8, width=4, height=2, stride=WORDS + 16, window_size=1 << 31),  # the same, in a wide window
        dict(base=0, width=0, height=3),                                          # empty
    ]

    async def control(ctx):
        for first in range(0, len(bad) - 1, PORTS):
            chunk = bad[first:first + PORTS]
            for port, desc in enumerate(chunk):
                await configure(ctx, st, stream_port_writes(port, write=True, line=port, **desc))
            for port, desc in enumerate(chunk):
                status = await port_status(ctx, st, port)
                assert status.error and not status.busy, (desc, status)
        status = await ports_status(ctx, st)
        assert status.error and not status.busy, status
        # One row of a wide stride is inside: the stride is never used.
        await configure(ctx, st, stream_port_writes(1, write=True, line=1, base=8, width=4, height=1,
                                                    stride=(1 << 32) - 1))
        assert not (await port_status(ctx, st, 1)).error
        await configure(ctx, st, stream_port_writes(0, write=True, line=0, **bad[-1]))
        assert (await port_status(ctx, st, 0)).error
        # Offered words are not taken; nothing is written.
        ctx.set(st.from_grid[0].valid, 1)
        for _ in range(20):
            await ctx.tick()
        assert not ctx.get(st.from_grid[0].ready)

    simulate(dut, control, processes=[memory_process(dut.memory, memory, rng, BEAT)], cycles=2000)
    np.testing.assert_array_equal(memory, before)
