"""Shared helpers for Amaranth-simulator tests: stream drivers with random
valid gaps and random back-pressure, and frames with position flags."""

import numpy as np
from amaranth.sim import Simulator


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


def memory_process(bus, memory, rng, beat_words, width=16, ready=0.7, max_latency=6):
    """A memory-bus target over the array ``memory`` (changed in place): takes
    commands with probability ``ready`` each cycle and answers reads in order
    after 0 .. ``max_latency`` cycles."""
    mask = (1 << width) - 1

    async def process(ctx):
        pending = []            # [cycles left, beat address]
        while True:
            taking = rng.random() < ready
            ctx.set(bus.cmd.ready, taking)
            if pending and pending[0][0] <= 0:
                beat = pending[0][1]
                ctx.set(bus.resp.valid, 1)
                ctx.set(bus.resp.payload, sum((int(memory[beat * beat_words + n]) & mask) << (width * n)
                                              for n in range(beat_words)))
            else:
                ctx.set(bus.resp.valid, 0)
            _, _, cmd_valid, cmd, resp_ready, resp_valid = await ctx.tick().sample(
                bus.cmd.valid, bus.cmd.payload, bus.resp.ready, bus.resp.valid)
            if resp_valid and resp_ready:
                pending.pop(0)
            for entry in pending:
                entry[0] -= 1
            if cmd_valid and taking:
                if cmd.we:
                    for n in range(beat_words):
                        if (cmd.wmask >> n) & 1:
                            memory[cmd.addr * beat_words + n] = (cmd.wdata >> (width * n)) & mask
                else:
                    pending.append([int(rng.integers(0, max_latency + 1)), cmd.addr])
    return process
