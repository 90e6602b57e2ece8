"""Shared helpers for Amaranth-simulator tests: stream drivers with random
valid gaps and random back-pressure, frames with position flags, a router's
fork of one reader in front of a sink (:class:`Forked`; a FIFO bank behind
them, :class:`ForkedBank`), and a global
output line's two ends joined (:class:`Line`)."""

import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from neuflow_hdl.fifo_bank import FifoBank
from neuflow_hdl.regs import sample_layout
from neuflow_hdl.stream import CreditPusher, PushedFIFO, SinkFIFO

from sim.rtl.pysim import memory_process  # noqa: F401  (re-exported for the tests)


def frame_words(image):
    """A 2-D array of codes as (data, eol, eof) stream words, row-major."""
    image = np.asarray(image)
    h, w = image.shape
    return [(int(image[r, c]), int(c == w - 1), int(c == w - 1 and r == h - 1))
            for r in range(h) for c in range(w)]


def flat_words(values):
    """A 1-D sequence of codes as words with no flags set."""
    return [(int(v), 0, 0) for v in values]


async def activate(ctx, unit, offered=None):
    """Pulse an operator's ``start`` as its tile does (the configuration set
    before it) and wait out the rewind on the cycle after it, when the
    operator takes no word: one offered on the stream ``offered`` then is
    refused (checked)."""
    ctx.set(unit.start, 1)
    await ctx.tick()
    ctx.set(unit.start, 0)
    if offered is None:
        await ctx.tick()
        return
    ctx.set(offered.valid, 1)
    _, _, ready = await ctx.tick().sample(offered.ready)
    ctx.set(offered.valid, 0)
    assert not ready, "a word was taken on the rewind's cycle"


async def stream_put(ctx, port, words, rng=None, gap=0.0):
    """Offer ``words`` on ``port``; idle a random number of cycles before each."""
    for data, eol, eof in words:
        while rng is not None and rng.random() < gap:
            await ctx.tick()
        ctx.set(port.payload, {"data": data, "eol": eol, "eof": eof})
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)


async def stream_get(ctx, port, count, rng=None, stall=0.0):
    """Take ``count`` words from ``port``, withholding ``ready`` at random."""
    words = []
    while len(words) < count:
        ready = not (rng is not None and rng.random() < stall)
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if valid and ready:
            words.append((payload.data, payload.eol, payload.eof))
    ctx.set(port.ready, 0)
    return words


def pass_through(dut, values, rng, *, gap, stall, cycles, processes=()):
    """Stream ``values`` through ``dut`` (``i`` -> ``o``) with random valid
    gaps and random back-pressure; returns the data words that came out."""
    got = {}

    async def feed(ctx):
        await stream_put(ctx, dut.i, flat_words(values), rng, gap)

    async def drain(ctx):
        got["w"] = await stream_get(ctx, dut.o, len(values), rng, stall)

    simulate(dut, feed, drain, cycles=cycles, processes=processes)
    return [w[0] for w in got["w"]]


class Hung(AssertionError):
    pass


def simulate(dut, *testbenches, cycles, processes=()):
    """Run ``testbenches`` (async functions of ctx) on ``dut`` to completion,
    with ``processes`` (models that never finish) in the background; fail if
    the testbenches have not all finished within ``cycles`` clock cycles."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in testbenches:
        sim.add_testbench(bench)
    for process in processes:
        sim.add_process(process)

    async def watchdog(ctx):
        for _ in range(cycles):
            await ctx.tick()
        raise Hung(f"testbenches did not finish within {cycles} cycles: "
                   f"{[bench.__name__ for bench in testbenches]}")

    sim.add_process(watchdog)
    sim.run()


class Forked(wiring.Component):
    """A tile router's fork with one reader, as the tile makes it: ``i`` is an
    ordinary stream whose ``ready`` is a register of the reader's credit
    (``o.ready``) a cycle before, and a word moves on ``o`` exactly when it
    is handed over at ``i``; the reader (a :class:`SinkFIFO`) takes every
    word offered."""

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        ready = Signal(init=1)          # the reader's credit is high when it is empty
        m.d.sync += ready.eq(self.o.ready)
        m.d.comb += [self.i.ready.eq(ready), self.o.valid.eq(self.i.valid & ready),
                     self.o.payload.eq(self.i.payload)]
        return m


class Line(wiring.Component):
    """A CreditPusher of ``pusher_depth`` words, written by a router's fork,
    pushing into a PushedFIFO of ``depth`` (or ``fifo``, one made already),
    as a tile and the grid's line FIFO are joined (with nothing between them
    but wires); ``level`` is the PushedFIFO's."""

    def __init__(self, shape, depth, pusher_depth=SinkFIFO.min_depth, fifo_class=PushedFIFO, fifo=None):
        self._shape, self._depth, self._pusher_depth = shape, depth, pusher_depth
        self._fifo = fifo_class(shape, depth) if fifo is None else fifo
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape)),
                          "level": Out(range(depth + 1))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fork = fork = Forked(self._shape)
        m.submodules.pusher = pusher = CreditPusher(self._shape, self._pusher_depth)
        m.submodules.fifo = fifo = self._fifo
        wiring.connect(m, wiring.flipped(self.i), fork.i)
        wiring.connect(m, fork.o, pusher.i)
        wiring.connect(m, pusher.o, fifo.i)
        wiring.connect(m, fifo.o, wiring.flipped(self.o))
        m.d.comb += self.level.eq(fifo.level)
        return m


class ForkedBank(wiring.Component):
    """A FifoBank whose inputs are written as a tile's router writes them (a
    fork of one reader each), so its inputs are ordinary streams."""

    def __init__(self, *, count, depth):
        self._bank = FifoBank(count=count, depth=depth)
        super().__init__({"chain": In(count), "i": In(stream.Signature(sample_layout(16))).array(count),
                          "o": Out(stream.Signature(sample_layout(16))).array(count)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bank = bank = self._bank
        m.d.comb += bank.chain.eq(self.chain)
        for n in range(bank.count):
            m.submodules[f"fork_{n}"] = fork = Forked(sample_layout(16))
            wiring.connect(m, wiring.flipped(self.i[n]), fork.i)
            wiring.connect(m, fork.o, bank.i[n])
            wiring.connect(m, bank.o[n], wiring.flipped(self.o[n]))
        return m
