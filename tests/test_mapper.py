"""Mapper on Amaranth's simulator against the numpy reference."""

import numpy as np
import pytest

from cases import mapper_config, mapper_segments
from helpers import activate, flat_words, frame_words, simulate, stream_get, stream_put
from neuflow_hdl.mapper import Mapper
from neuflow_hdl.numerics import Q8_8
from neuflow_hdl.regs import PoolMode, Symmetry
from sim.golden import reference
from sim.golden.mapper_fit import fit


@pytest.fixture(scope="module")
def dut():
    return Mapper(segments=8, max_width=16)


def run_mapper(dut, config, words, rng, gap, stall, count=None):
    """The mapper's first ``count`` output words (default: one per input word)."""
    got = {}

    async def feed(ctx):
        ctx.set(dut.config, config)
        await stream_put(ctx, dut.i, words, rng, gap)

    async def drain(ctx):
        got["words"] = await stream_get(ctx, dut.o, len(words) if count is None else count, rng, stall)

    simulate(dut, feed, drain, cycles=20 * len(words) + 200)
    return got["words"]


@pytest.mark.parametrize("symmetry", list(Symmetry))
def test_random_segments_with_gaps_and_backpressure(dut, symmetry):
    rng = np.random.default_rng(20 + symmetry.value)
    for _ in range(4):
        bounds, slopes, offsets = mapper_segments(rng, symmetry)
        shift = int(rng.integers(0, 17))
        x = rng.integers(Q8_8.min, Q8_8.max + 1, 300)
        x[:6] = [Q8_8.min, Q8_8.max, 0, -1, bounds[3], bounds[5]]
        config = mapper_config(symmetry, shift, bounds, slopes, offsets)
        got = run_mapper(dut, config, flat_words(x), rng, gap=0.3, stall=0.3)
        want = reference.mapper(x, bounds, slopes, offsets, symmetry=symmetry, shift=shift)
        np.testing.assert_array_equal([w[0] for w in got], want)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "relu", "sqrt"])
def test_fitted_functions_and_flags(dut, name):
    """A fitted function on a whole frame: values bit-exact, flags passed through."""
    rng = np.random.default_rng(40)
    result = fit(name)
    image = rng.integers(Q8_8.min, Q8_8.max + 1, (6, 50))
    words = frame_words(image)
    got = run_mapper(dut, result.config(), words, rng, gap=0.2, stall=0.4)
    assert [w[0] for w in got] == result(image).ravel().tolist()
    assert [w[1:] for w in got] == [w[1:] for w in words]


@pytest.mark.parametrize("mode", [PoolMode.SUM, PoolMode.MAX])
def test_pool_stage_with_gaps_and_backpressure(dut, mode):
    """Random mappings pooled over frames of odd and even sizes (several frames
    back to back, so the stage's position wraps), values and flags bit-exact
    against the reference's mapper then pool."""
    rng = np.random.default_rng(60 + mode.value)
    for _ in range(3):
        symmetry = Symmetry(int(rng.integers(0, 3)))
        bounds, slopes, offsets = mapper_segments(rng, symmetry)
        shift, pool_shift = int(rng.integers(0, 17)), int(rng.integers(0, 4))
        height, width = int(rng.integers(2, 8)), int(rng.integers(2, 17))
        config = mapper_config(symmetry, shift, bounds, slopes, offsets)
        config["pool"] = {"mode": mode, "shift": pool_shift, "width": width, "height": height}
        frames = [rng.integers(Q8_8.min, Q8_8.max + 1, (height, width)) for _ in range(2)]
        words = [w for image in frames for w in frame_words(image)]
        want = []
        for image in frames:
            mapped = reference.mapper(image, bounds, slopes, offsets, symmetry=symmetry, shift=shift)
            want += frame_words(reference.pool(mapped, mode, shift=pool_shift))
        got = run_mapper(dut, config, words, rng, gap=0.3, stall=0.3, count=len(want))
        assert got == want


def test_start_rewinds_the_pool_stage(dut):
    """A start abandons a pooled frame's first row (half of its windows, no
    word out): the next frame pools from its origin, and the cycle after
    the start (the rewind) takes no word."""
    rng = np.random.default_rng(80)
    bounds, slopes, offsets = mapper_segments(rng, Symmetry.NONE)
    config = mapper_config(Symmetry.NONE, 8, bounds, slopes, offsets)
    config["pool"] = {"mode": PoolMode.SUM, "shift": 1, "width": 6, "height": 4}
    first, image = (rng.integers(Q8_8.min, Q8_8.max + 1, shape) for shape in ((1, 6), (4, 6)))
    mapped = reference.mapper(image, bounds, slopes, offsets, symmetry=Symmetry.NONE, shift=8)
    want = frame_words(reference.pool(mapped, PoolMode.SUM, shift=1))
    got = {}

    async def bench(ctx):
        ctx.set(dut.config, config)
        await stream_put(ctx, dut.i, frame_words(first)[:6], rng, 0.3)
        for _ in range(2 * dut.latency):
            await ctx.tick()
        await activate(ctx, dut, dut.i)
        await stream_put(ctx, dut.i, frame_words(image), rng, 0.3)

    async def drain(ctx):
        got["words"] = await stream_get(ctx, dut.o, len(want), rng, 0.3)
        for _ in range(4 * dut.latency):        # nothing more
            assert not (await ctx.tick().sample(dut.o.valid))[2]

    simulate(dut, bench, drain, cycles=2000)
    assert got["words"] == want


def test_pool_stage_refuses_what_it_cannot_hold():
    """A pooled frame narrower or shorter than 2, or wider than the line buffer
    holds, is a configuration error: nothing is accepted."""
    dut = Mapper(segments=2, max_width=8)
    bounds, slopes, offsets = [0, 0], [256, 256], [0, 0]
    for width, height, bad in ((8, 2, False), (9, 2, True), (1, 4, True), (4, 1, True)):
        config = mapper_config(Symmetry.NONE, 8, bounds, slopes, offsets)
        config["pool"] = {"mode": PoolMode.SUM, "shift": 2, "width": width, "height": height}
        seen = {}

        async def check(ctx):
            ctx.set(dut.config, config)
            ctx.set(dut.i.valid, 1)
            await ctx.tick()
            seen["error"], seen["ready"] = ctx.get(dut.error), ctx.get(dut.i.ready)

        simulate(dut, check, cycles=10)
        assert (seen["error"], seen["ready"]) == (int(bad), int(not bad)), (width, height)
