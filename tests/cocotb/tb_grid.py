"""cocotb bench: a 2 x 2 grid on Verilator, configured over the configuration
bus, against the numpy reference."""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge

from cases import frame_flags
from neuflow_hdl.cfgbus import RESPONDER_READ_LATENCY
from neuflow_hdl.grid import BUS_LAG
from neuflow_hdl.regs import (AluOp, ConvMode, GRID_STATUS, GRID_TILE, STATUS, STATUS_REG, Unit,
                              config_address, control_write, tile_config_writes)
from neuflow_hdl.tile import CONTROL_LAG, STATUS_LAG
from sim.golden import reference
from sim.golden.mapper_fit import fit
from streams import Port, exchange, params, start

P = params()
W, G, FIFOS, K, MAX_WIDTH, COLUMNS = (P["word_width"], P["globals"], P["fifos"], P["kernel"],
                                      P["max_width"], P["columns"])


def tile_index(r, c):
    return r * COLUMNS + c


def setup(r, c, **kw):
    return tile_config_writes(tile_index(r, c), globals_=G, fifos=FIFOS, width=W, **kw)


async def bus_write(dut, writes):
    """Write ``writes``; return once the tiles' input register has passed the
    last of them on (neuflow_hdl.cfgbus) and a start among them has acted."""
    for address, word in writes:
        dut.bus__addr.value = address
        dut.bus__wdata.value = word
        dut.bus__we.value = 1
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
    dut.bus__we.value = 0
    for _ in range(1 + BUS_LAG + CONTROL_LAG):
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)


async def bus_read(dut, address):
    """The answer RESPONDER_READ_LATENCY cycles after the read."""
    dut.bus__addr.value = address
    dut.bus__re.value = 1
    for cycle in range(RESPONDER_READ_LATENCY):
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.bus__re.value = 0
    return int(dut.bus__rdata.value)


async def tile_status(dut, r, c):
    return STATUS.from_bits(await bus_read(dut, config_address(tile_index(r, c), Unit.CONTROL,
                                                                  STATUS_REG)))


async def grid_status(dut):
    return GRID_STATUS.from_bits(await bus_read(dut, config_address(GRID_TILE, Unit.CONTROL, 0)))


def g_in(dut, g):
    return Port(dut, f"global_in__{g}", W)


def g_out(dut, g):
    return Port(dut, f"global_out__{g}", W)


def frame(image):
    return [(int(v), *f) for v, f in zip(image.ravel(), frame_flags(image.shape))]


def weights(kernel):
    return [(int(v), 0, 0) for v in kernel.ravel()]


async def reset_all(dut):
    """Every tile: all routes off, flushed (a grid reused without reset)."""
    for r in range(P["rows"]):
        for c in range(COLUMNS):
            await bus_write(dut, setup(r, c, start=False) + [control_write(tile_index(r, c),
                                                                           start=True, flush=True)])


async def sum_of_convolutions(dut, rng, *, gap, stall):
    """tanh_mapper(conv7x7(a) + conv7x7(b) + bias): tile (0,0) convolves a and passes
    its words east as the partial sum of tile (0,1), which convolves b, adds,
    maps and writes global_out_0.  Weights load on two global lines at once."""
    h, w = 12, int(rng.integers(K, MAX_WIDTH + 1))
    a = rng.integers(-400, 400, (h, w))
    b = rng.integers(-400, 400, (h, w))
    ka = rng.integers(-80, 80, (K, K))
    kb = rng.integers(-80, 80, (K, K))
    bias = int(rng.integers(-20000, 20000))
    tanh = fit("tanh", P["segments"])
    conv = {"width": w, "height": h, "k": K, "stride": 1, "shift": 8}
    await reset_all(dut)
    await bus_write(dut, setup(0, 0, routes={"convolver_in": "global_in_0",
                                             "convolver_weights": "global_in_2",
                                             "east_out": "convolver"},
                               convolver={**conv, "mode": ConvMode.MAC, "bias": bias}))
    await bus_write(dut, setup(0, 1, routes={"convolver_in": "global_in_1", "convolver_psum": "west_in",
                                             "convolver_weights": "global_in_3",
                                             "mapper_in": "convolver", "global_out_0": "mapper"},
                               convolver={**conv, "mode": ConvMode.MAC_PSUM, "bias": 0},
                               mapper=tanh.config()))
    await exchange(dut, {g_in(dut, 2): weights(ka), g_in(dut, 3): weights(kb)}, {}, rng=rng, gap=gap)
    partial = reference.conv2d(a, ka, bias=bias, shift=8)
    want = tanh(reference.conv2d(b, kb, psum=partial, shift=8))
    got, _ = await exchange(dut, {g_in(dut, 0): frame(a), g_in(dut, 1): frame(b)},
                            {g_out(dut, 0): want.size}, rng=rng, gap=gap, stall=stall)
    words = got[g_out(dut, 0)]
    assert [x[0] for x in words] == want.ravel().tolist(), "sum of convolutions differs"
    assert [x[1:] for x in words] == frame_flags(want.shape)
    for c in range(2):
        status = await tile_status(dut, 0, c)
        assert not status.error and status.done, f"tile (0,{c}) status {status}"
    return want.size


@cocotb.test()
async def sum_of_two_convolutions_then_tanh(dut):
    await start(dut)
    rng = np.random.default_rng(P["seed"])
    checked = 0
    for n in range(P["runs"]):
        checked += await sum_of_convolutions(dut, rng, gap=[0.0, 0.3, 0.5][n % 3],
                                             stall=[0.0, 0.5, 0.3][n % 3])
    dut._log.info("grid: %d words of tanh(conv(a) + conv(b) + bias) bit-exact", checked)


@cocotb.test()
async def reconfigure_without_reset(dut):
    """After the sum of convolutions: routes and kernels change, no reset.
    relu_mapper(conv3x3/2(a) + b): tile (0,0) sends south to tile (1,0)'s ALU,
    whose other operand is global_in_1; result on global_out_1."""
    await start(dut)
    rng = np.random.default_rng(P["seed"] + 1)
    await sum_of_convolutions(dut, rng, gap=0.2, stall=0.2)
    for _ in range(2):
        h, w = 11, int(rng.integers(5, MAX_WIDTH + 1))
        a = rng.integers(-2000, 2000, (h, w))
        k3 = rng.integers(-300, 300, (3, 3))
        conv = reference.conv2d(a, k3, stride=2, shift=8)
        b = rng.integers(-2000, 2000, conv.shape)
        relu = fit("relu", P["segments"])
        await reset_all(dut)
        await bus_write(dut, setup(0, 0, routes={"convolver_in": "global_in_0",
                                                 "convolver_weights": "global_in_2",
                                                 "south_out": "convolver"},
                                   convolver={"width": w, "height": h, "k": 3, "stride": 2,
                                              "mode": ConvMode.MAC, "shift": 8, "bias": 0}))
        await bus_write(dut, setup(1, 0, routes={"alu_a": "north_in", "alu_b": "global_in_1",
                                                 "mapper_in": "alu", "global_out_1": "mapper"},
                                   alu={"op": AluOp.ADD, "b_const": 0, "shift": 0, "const": 0},
                                   mapper=relu.config()))
        await exchange(dut, {g_in(dut, 2): weights(k3)}, {})
        want = relu(reference.alu(AluOp.ADD, conv, b))
        got, _ = await exchange(dut, {g_in(dut, 0): frame(a), g_in(dut, 1): frame(b)},
                                {g_out(dut, 1): want.size}, rng=rng, gap=0.3, stall=0.4)
        assert [x[0] for x in got[g_out(dut, 1)]] == want.ravel().tolist()
        assert not (await grid_status(dut)).error


@cocotb.test()
async def misconfiguration_is_reported_and_recoverable(dut):
    await start(dut)
    rng = np.random.default_rng(P["seed"] + 2)
    await reset_all(dut)
    bad_conv = {"width": 16, "height": 8, "k": K, "stride": 1, "mode": ConvMode.MAC, "shift": 8,
                "bias": 0}
    cases = [
        ("route from a missing neighbour", setup(0, 0, routes={"convolver_in": "north_in",
                                                               "global_out_0": "convolver"},
                                                 convolver=bad_conv), "route_error"),
        ("k > K", setup(0, 0, routes={"convolver_in": "global_in_0", "global_out_0": "convolver"},
                        convolver={**bad_conv, "k": K + 1}), "convolver_error"),
        ("width > max_width", setup(0, 0, routes={"convolver_in": "global_in_0",
                                                  "global_out_0": "convolver"},
                                    convolver={**bad_conv, "width": MAX_WIDTH + 1}),
         "convolver_error"),
    ]
    for what, writes, flag in cases:
        await bus_write(dut, writes)
        for _ in range(STATUS_LAG):     # an operator checks its new configuration a cycle late
            await RisingEdge(dut.clk)
        status = await tile_status(dut, 0, 0)
        assert getattr(status, flag) and status.error, f"{what}: status {status}"
        assert (await grid_status(dut)).error, what
        # Offer words: they wait in FIFOs; nothing hangs, nothing comes out.
        line = g_in(dut, 0)
        for value in range(5):
            line.payload.value = value
            line.valid.value = 1
            await RisingEdge(dut.clk)
            await FallingEdge(dut.clk)
        line.valid.value = 0
        assert not int(dut.global_out__0__valid.value), what
        await reset_all(dut)
        assert not (await tile_status(dut, 0, 0)).busy, f"{what}: flush left words behind"
    # Two tiles driving one global output.
    await bus_write(dut, setup(0, 0, routes={"mapper_in": "global_in_0", "global_out_2": "mapper"},
                               mapper=fit("identity", P["segments"]).config()))
    await bus_write(dut, setup(1, 1, routes={"mapper_in": "global_in_1", "global_out_2": "mapper"},
                               mapper=fit("identity", P["segments"]).config()))
    status = await grid_status(dut)
    assert status.global_conflict and status.error
    # Later runs are not corrupted.
    await sum_of_convolutions(dut, rng, gap=0.3, stall=0.3)
    assert not (await grid_status(dut)).error
