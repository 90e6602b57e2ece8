"""Shared helpers for Amaranth-simulator tests: stream drivers with random
valid gaps and random back-pressure, and frames with position flags."""

import numpy as np
from amaranth.sim import Simulator

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

