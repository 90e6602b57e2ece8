"""Tile, router and configuration decoding on Amaranth's simulator (a 1 x 1
grid, so global-line forks and bus reads work as in any grid)."""

import numpy as np
import pytest

from compiler.schedule import HOP_LAG, conv_latency
from helpers import flat_words, frame_words, simulate, stream_get, stream_put
from neuflow_hdl.cfgbus import RESPONDER_READ_LATENCY
from neuflow_hdl.grid import BUS_LAG, Grid
from neuflow_hdl.numerics import Q8_8
from neuflow_hdl.presets import GridConfig
from neuflow_hdl.regs import (AluOp, STATUS, STATUS_REG, Symmetry, Unit, config_address,
                              control_write, tile_config_writes)
from neuflow_hdl.tile import CONTROL_LAG, LINE_SINK_DEPTH, STATUS_LAG
from sim.golden import reference

# Operator inputs of 7 words: the least that takes a global line at full rate
# (tile.sink_room); small, so that back-pressure reaches the lines often.
CONFIG = GridConfig(rows=1, columns=1, globals_=2, kernel=3, max_width=16, fifos=1, fifo_depth=8,
                    input_depth=LINE_SINK_DEPTH)


@pytest.fixture(scope="module")
def dut():
    return Grid(CONFIG)


def writes(**kw):
    return tile_config_writes(0, globals_=CONFIG.globals_, fifos=CONFIG.fifos, **kw)


async def bus_write(ctx, dut, items):
    """Write ``items`` and return once the tiles' input register has passed
    the last of them on (:mod:`neuflow_hdl.cfgbus`) and a start among them
    has acted."""
    for address, word in items:
        ctx.set(dut.bus.addr, dut.bus.addr.shape().from_bits(address))
        ctx.set(dut.bus.wdata, word)
        ctx.set(dut.bus.we, 1)
        await ctx.tick()
    ctx.set(dut.bus.we, 0)
    for _ in range(1 + BUS_LAG + CONTROL_LAG):
        await ctx.tick()


async def read_status(ctx, dut, tile=0):
    ctx.set(dut.bus.addr, dut.bus.addr.shape().from_bits(config_address(tile, Unit.CONTROL, STATUS_REG)))
    ctx.set(dut.bus.re, 1)
    await ctx.tick()
    ctx.set(dut.bus.re, 0)
    for _ in range(RESPONDER_READ_LATENCY - 1):
        await ctx.tick()
    return STATUS.from_bits(ctx.get(dut.bus.rdata))


LINE = {"symmetry": Symmetry.NONE, "shift": 8,
        "segments": [{"bound": Q8_8.min, "slope": 512, "offset": 3}] * 8}     # y = 2x + 3/256


def test_fork_to_two_operators_with_independent_backpressure(dut):
    """global_in_0 feeds the mapper and the ALU; each output is stalled at random."""
    rng = np.random.default_rng(1)
    x = rng.integers(-3000, 3000, 300)
    got = {}

    async def control(ctx):
        await bus_write(ctx, dut, writes(
            routes={"mapper_in": "global_in_0", "alu_a": "global_in_0",
                    "global_out_0": "mapper", "global_out_1": "alu"},
            mapper=LINE, alu={"op": AluOp.SQUARE, "b_const": 0, "shift": 8, "const": 0}))
        status = await read_status(ctx, dut)
        assert not status.error
        await stream_put(ctx, dut.global_in[0], flat_words(x), rng, 0.3)

    def drain(g):
        async def bench(ctx):
            got[g] = await stream_get(ctx, dut.global_out[g], len(x), rng, 0.6)
        return bench

    simulate(dut, control, drain(0), drain(1), cycles=20_000)
    mapper = reference.mapper(x, [Q8_8.min] * 8, [512] * 8, [3] * 8, shift=8)
    np.testing.assert_array_equal([w[0] for w in got[0]], mapper)
    np.testing.assert_array_equal([w[0] for w in got[1]], reference.alu(AluOp.SQUARE, x, shift=8))


def test_writes_take_effect_at_start_only(dut):
    rng = np.random.default_rng(2)
    x = rng.integers(-3000, 3000, 20)
    got = []

    async def collect(ctx):
        while len(got) < 3 * len(x):
            got.extend(await stream_get(ctx, dut.global_out[0], 1, rng, 0.3))

    async def bench(ctx):
        routes = {"alu_a": "global_in_1", "global_out_0": "alu"}
        await bus_write(ctx, dut, writes(routes=routes, alu={"op": AluOp.ADD, "b_const": 1,
                                                             "shift": 0, "const": 1}))
        await stream_put(ctx, dut.global_in[1], flat_words(x), rng, 0.2)
        # Shadow writes only: the running configuration must not change...
        await bus_write(ctx, dut, writes(routes=routes, start=False,
                                         alu={"op": AluOp.SUB, "b_const": 1, "shift": 0, "const": 1}))
        await stream_put(ctx, dut.global_in[1], flat_words(x), rng, 0.2)
        while len(got) < 2 * len(x) or (await read_status(ctx, dut)).busy:
            await ctx.tick()
        # ...until start.
        await bus_write(ctx, dut, [control_write(0, start=True)])
        await stream_put(ctx, dut.global_in[1], flat_words(x), rng, 0.2)

    simulate(dut, bench, collect, cycles=5000)
    assert [w[0] for w in got] == (x + 1).tolist() * 2 + (x - 1).tolist()


def test_route_errors_are_reported(dut):
    async def bench(ctx):
        # A neighbour the 1 x 1 grid does not have.
        await bus_write(ctx, dut, writes(routes={"mapper_in": "north_in", "global_out_0": "mapper"},
                                         mapper=LINE))
        assert (await read_status(ctx, dut)).route_error
        # A select code past the last source.
        await bus_write(ctx, dut, [(config_address(0, Unit.ROUTER, 0), 40),
                                   control_write(0, start=True)])
        status = await read_status(ctx, dut)
        assert status.route_error and status.error
        # Output toward a missing neighbour.
        await bus_write(ctx, dut, writes(routes={"mapper_in": "global_in_0", "east_out": "mapper"},
                                         mapper=LINE))
        assert (await read_status(ctx, dut)).route_error
        # A valid configuration clears it.
        await bus_write(ctx, dut, writes(routes={"mapper_in": "global_in_0", "global_out_0": "mapper"},
                                         mapper=LINE))
        status = await read_status(ctx, dut)
        assert not status.error and not status.route_error

    simulate(dut, bench, cycles=2000)


def test_operator_errors_flush_and_done(dut):
    """k > K is a convolver error; flush empties a stuck tile; done follows a frame end."""
    rng = np.random.default_rng(3)
    image = rng.integers(-500, 500, (4, 8))
    got = []

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.global_out[0], 8, rng, 0.3))

    async def bench(ctx):
        conv = {"width": 8, "height": 4, "k": CONFIG.kernel + 1, "stride": 1, "mode": 2,
                "shift": 0, "bias": 0}
        await bus_write(ctx, dut, writes(routes={"convolver_in": "global_in_0",
                                                 "global_out_0": "convolver"}, convolver=conv))
        status = await read_status(ctx, dut)
        assert status.convolver_error and status.error
        # Words pile up in the input FIFO; the line does not hang the testbench.
        for value in range(3):
            ctx.set(dut.global_in[0].payload, {"data": value, "eol": 0, "eof": 0})
            ctx.set(dut.global_in[0].valid, 1)
            await ctx.tick()
        ctx.set(dut.global_in[0].valid, 0)
        for _ in range(STATUS_LAG):     # the words in the tile's status
            await ctx.tick()
        assert (await read_status(ctx, dut)).busy
        await bus_write(ctx, dut, [control_write(0, flush=True)])
        assert not (await read_status(ctx, dut)).busy
        # A good configuration now computes a 2x2 max pool correctly.
        conv.update(k=2, stride=2)
        await bus_write(ctx, dut, writes(routes={"convolver_in": "global_in_0",
                                                 "global_out_0": "convolver"}, convolver=conv))
        for _ in range(STATUS_LAG):     # the convolver checks its new configuration a cycle late
            await ctx.tick()
        assert not (await read_status(ctx, dut)).error
        await stream_put(ctx, dut.global_in[0], frame_words(image), rng, 0.3)
        while len(got) < 8:
            await ctx.tick()
        for _ in range(4):
            await ctx.tick()
        status = await read_status(ctx, dut)
        assert status.done and not status.busy

    simulate(dut, bench, collect, cycles=5000)
    assert [w[0] for w in got] == reference.window_max(image, 2, stride=2).ravel().tolist()


def test_convolution_configured_and_started_in_one_burst(dut):
    """Operators must see the configuration that start activates (the weight
    pointer depends on k): configure k = 3 after a k = 0 reset state, start,
    load weights, convolve."""
    rng = np.random.default_rng(4)
    image = rng.integers(-500, 500, (5, 7))
    kernel = rng.integers(-300, 300, (3, 3))
    want = reference.conv2d(image, kernel, bias=77, shift=8)
    got = []

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.global_out[1], want.size, rng, 0.3))

    async def bench(ctx):
        await bus_write(ctx, dut, writes(routes={"convolver_in": "global_in_0",
                                                 "convolver_weights": "global_in_1",
                                                 "global_out_1": "convolver"},
                                         convolver={"width": 7, "height": 5, "k": 3, "stride": 1,
                                                    "mode": 0, "shift": 8, "bias": 77}))
        await stream_put(ctx, dut.global_in[1], flat_words(kernel.ravel()), rng, 0.3)
        await stream_put(ctx, dut.global_in[0], frame_words(image), rng, 0.3)

    simulate(dut, bench, collect, cycles=5000)
    assert [w[0] for w in got] == want.ravel().tolist()


def test_a_tile_passes_one_word_per_cycle(dut):
    """global_in -> mapper -> global_out with no gaps and no back-pressure: one
    word per cycle after the pipeline fills (every FIFO on the way included)."""
    x = np.arange(200) - 100
    cycles = {}

    async def bench(ctx):
        await bus_write(ctx, dut, writes(routes={"mapper_in": "global_in_0", "global_out_0": "mapper"},
                                         mapper=LINE))
        ctx.set(dut.global_out[0].ready, 1)
        n_in = n_out = cycle = 0
        first = last = None
        while n_out < len(x):
            if n_in < len(x):
                ctx.set(dut.global_in[0].payload, {"data": int(x[n_in]), "eol": 0, "eof": 0})
            ctx.set(dut.global_in[0].valid, n_in < len(x))
            _, _, ready, valid = await ctx.tick().sample(dut.global_in[0].ready, dut.global_out[0].valid)
            if n_in < len(x) and ready:
                n_in += 1
            if valid:
                first = cycle if first is None else first
                last = cycle
                n_out += 1
            cycle += 1
        cycles["span"] = last - first + 1

    simulate(dut, bench, cycles=5000)
    assert cycles["span"] == len(x)


# -- A chain of tiles: a line read at two chain positions ---------------------------

CHAIN = GridConfig(rows=1, columns=4, globals_=8, kernel=3, max_width=24, fifos=2, fifo_depth=64,
                   input_depth=16)


@pytest.fixture(scope="module")
def chain_dut():
    return Grid(CHAIN)


def _run_chain(dut, lines, via_fifo, rng):
    """Tiles 0 -> 1 -> ... sum 3x3 convolutions of global line ``lines[t]``
    (the last tile reads it through FIFO 0 when ``via_fifo``); every line
    offers a word every cycle and the output is always ready.  Returns the
    cycles from the first input offered to the last output."""
    h, w = 20, 24
    images = {line: rng.integers(-900, 900, (h, w)) for line in set(lines)}
    kernels = [rng.integers(-200, 200, (3, 3)) for _ in lines]
    result = {}

    async def bench(ctx):
        for t, line in enumerate(lines):
            routes = {"convolver_weights": f"global_in_{4 + t}"}       # its own weight line
            if via_fifo and t == len(lines) - 1:
                routes.update({"fifo_0_in": f"global_in_{line}", "convolver_in": "fifo_0"})
            else:
                routes["convolver_in"] = f"global_in_{line}"
            if t:
                routes["convolver_psum"] = "west_in"
            routes["east_out" if t < len(lines) - 1 else "global_out_0"] = "convolver"
            await bus_write(ctx, dut, tile_config_writes(
                t, globals_=CHAIN.globals_, fifos=CHAIN.fifos, routes=routes,
                convolver={"width": w, "height": h, "k": 3, "stride": 1, "mode": int(t > 0),
                           "shift": 8, "bias": 0}))
            await stream_put(ctx, dut.global_in[4 + t], flat_words(kernels[t].ravel()))
        words = {line: frame_words(images[line]) for line in images}
        sent = dict.fromkeys(images, 0)
        ctx.set(dut.global_out[0].ready, 1)
        out, cycles = [], 0
        while len(out) < (h - 2) * (w - 2):
            for line in images:
                more = sent[line] < len(words[line])
                if more:
                    data, eol, eof = words[line][sent[line]]
                    ctx.set(dut.global_in[line].payload, {"data": data, "eol": eol, "eof": eof})
                ctx.set(dut.global_in[line].valid, more)
            _, _, valid, payload, *readies = await ctx.tick().sample(
                dut.global_out[0].valid, dut.global_out[0].payload,
                *(dut.global_in[line].ready for line in images))
            for line, ready in zip(images, readies):
                sent[line] += bool(ready and sent[line] < len(words[line]))
            if valid:
                out.append(payload.data)
            cycles += 1
        result["cycles"] = cycles
        result["out"] = out

    simulate(dut, bench, cycles=10_000)
    want = None
    for t, line in enumerate(lines):
        want = reference.conv2d(images[line], kernels[t], psum=want, shift=8)
    np.testing.assert_array_equal(result["out"], want.ravel())
    return result["cycles"]


def test_chain_links_lag_by_hop_lag_and_shared_lines_keep_full_rate(chain_dut):
    """A lone convolver tile takes one word per cycle plus
    compiler.schedule.conv_latency, and each link of a convolver chain adds
    HOP_LAG cycles (its join stages and FIFOs): the schedule's pass estimate
    relies on both.  A
    global line read by the chain head and by the tile three links down keeps
    the chain at full rate, directly (the later convolver fires its windows as
    the line arrives and holds the sums in its output buffer until their
    partial sums come) and through the FIFO bank (how the compiler routes such
    readers, for chains whose lag exceeds that buffer)."""
    rng = np.random.default_rng(7)
    alone = _run_chain(chain_dut, [0], False, rng)
    separate = _run_chain(chain_dut, [0, 1, 2, 3], False, rng)
    assert alone == 20 * 24 + conv_latency(CHAIN)
    assert separate - alone == 3 * HOP_LAG
    assert _run_chain(chain_dut, [0, 1, 2, 0], False, rng) <= separate + 2
    assert _run_chain(chain_dut, [0, 1, 2, 0], True, rng) <= separate + 2


def test_a_tile_is_busy_while_the_line_it_drives_holds_words(dut):
    """The global output line's FIFO is the grid's: its words count as the
    driving tile's (busy, then done once the frame's last word has left it),
    and a flush of the tile empties it."""
    x = [(5, 0, 0), (6, 0, 0), (7, 1, 1)]

    async def bench(ctx):
        await bus_write(ctx, dut, writes(routes={"mapper_in": "global_in_0", "global_out_1": "mapper"},
                                         mapper=LINE))
        ctx.set(dut.global_out[1].ready, 0)
        await stream_put(ctx, dut.global_in[0], x)
        await ctx.tick().repeat(20)                 # the mapper has drained into the line's FIFO
        status = await read_status(ctx, dut)
        assert status.busy and not status.done and ctx.get(dut.status.busy)
        got = await stream_get(ctx, dut.global_out[1], len(x))
        assert [w[0] for w in got] == [2 * d + 3 for d, _, _ in x]         # LINE, in codes
        await ctx.tick().repeat(2)
        status = await read_status(ctx, dut)
        assert not status.busy and status.done and not ctx.get(dut.status.busy)
        # Words left on the line when the tile is flushed are gone with it.
        await stream_put(ctx, dut.global_in[0], x)
        await ctx.tick().repeat(20)
        assert ctx.get(dut.global_out[1].valid)
        await bus_write(ctx, dut, [control_write(0, flush=True)])
        assert not ctx.get(dut.global_out[1].valid) and not (await read_status(ctx, dut)).busy

    simulate(dut, bench, cycles=2000)
