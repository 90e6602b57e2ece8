"""Mapper on Amaranth's simulator against the numpy reference."""

import numpy as np
import pytest

from cases import mapper_config, mapper_segments
from helpers import flat_words, frame_words, simulate, stream_get, stream_put
from neuflow_hdl.mapper import Mapper
from neuflow_hdl.numerics import Q8_8
from neuflow_hdl.regs import Symmetry
from sim.golden import reference
from sim.golden.mapper_fit import fit


@pytest.fixture(scope="module")
def dut():
    return Mapper(segments=8)


def run_mapper(dut, config, words, rng, gap, stall):
    got = {}

    async def feed(ctx):
        ctx.set(dut.config, config)
        await stream_put(ctx, dut.i, words, rng, gap)

    async def drain(ctx):
        got["words"] = await stream_get(ctx, dut.o, len(words), rng, stall)

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
