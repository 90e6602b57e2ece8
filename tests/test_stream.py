"""A stream across the die (a tile's CreditPusher into the grid's PushedFIFO,
as on every global output line) on Amaranth's simulator: order, no loss, a
credit that lets the FIFO fill but never overfill, full rate and latency."""

import numpy as np
import pytest

from helpers import Line, flat_words, pass_through, simulate, stream_put
from neuflow_hdl.grid import LINE_DEPTH, LINE_LATENCY
from neuflow_hdl.regs import sample_layout
from neuflow_hdl.stream import CREDIT_PUSHER_LATENCY, PUSHED_FIFO_LATENCY, PushedFIFO

SAMPLE = sample_layout(16)


def test_a_line_keeps_every_word_and_fills_its_fifo_without_overfilling_it():
    """Random valid gaps and back-pressure: every word arrives once, in order;
    the FIFO's level never passes its depth and reaches it (the credit is
    tight: one word less of lag and it would overfill, which the order check
    would see as a lost word)."""
    line = Line(SAMPLE, LINE_DEPTH)
    rng = np.random.default_rng(5)
    data = rng.integers(-30000, 30000, 400)
    levels = []

    async def watch(ctx):
        async for _, _, level in ctx.tick().sample(line.level):
            levels.append(level)

    assert pass_through(line, data, rng, gap=0.2, stall=0.6, cycles=6000, processes=[watch]) == data.tolist()
    assert max(levels) == LINE_DEPTH


def _first_and_rate(line, words=60):
    """A consumer always ready and a word offered every cycle: the cycle the
    first word leaves after its handshake, and the words that left in the
    ``words`` cycles from then."""
    out = []

    async def offer(ctx):
        ctx.set(line.o.ready, 1)
        await stream_put(ctx, line.i, flat_words(np.arange(words)))
        await ctx.tick().repeat(2 * LINE_LATENCY + words)

    async def collect(ctx):
        async for _, _, valid, payload in ctx.tick().sample(line.o.valid, line.o.payload):
            out.append(payload.data if valid else None)

    simulate(line, offer, cycles=4 * words + 40, processes=[collect])
    first = out.index(0)
    return first, [w for w in out[first:first + words] if w is not None]


def test_a_line_moves_a_word_every_cycle_from_its_latency_on():
    """LINE_LATENCY (the compiler's, through conv_latency) is the pusher's and
    the FIFO's; LINE_DEPTH words keep full rate."""
    assert LINE_LATENCY == CREDIT_PUSHER_LATENCY + PUSHED_FIFO_LATENCY
    first, words = _first_and_rate(Line(SAMPLE, LINE_DEPTH))
    # out[k] is sampled after clock edge k + 1, and word 0's handshake is edge 1.
    assert first == LINE_LATENCY
    assert words == list(range(60))


class _ShallowFIFO(PushedFIFO):
    """A PushedFIFO allowed one word less than its minimum."""
    min_depth = PushedFIFO.min_depth - 1


def test_a_line_fifo_one_word_short_of_its_minimum_loses_rate():
    """PushedFIFO.min_depth is the fewest words that keep full rate."""
    _, words = _first_and_rate(Line(SAMPLE, _ShallowFIFO.min_depth, fifo_class=_ShallowFIFO))
    assert words == list(range(len(words))) and len(words) < 60


def test_a_pushed_fifo_too_shallow_for_full_rate_is_refused():
    with pytest.raises(ValueError, match=f"at least {PushedFIFO.min_depth}"):
        PushedFIFO(SAMPLE, PushedFIFO.min_depth - 1)
