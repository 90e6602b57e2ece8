"""cocotb bench: the Convolver on Verilator against the numpy reference."""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge

from cases import conv_expected, conv_job, frame_flags
from neuflow_hdl.regs import CONV_CONFIG, ConvMode
from streams import Port, exchange, params, start

P = params()
W = P.get("word_width", 16)


def ports(dut):
    return {name: Port(dut, name, W) for name in ("i", "psum", "weights", "o")}


async def configure(dut, port, cfg, weights):
    dut.config.value = CONV_CONFIG.const(cfg).as_bits()
    dut.start.value = 1
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.start.value = 0
    await RisingEdge(dut.clk)       # the rewind's cycle, which takes no word
    await FallingEdge(dut.clk)
    await exchange(dut, {port["weights"]: [(int(v), 0, 0) for v in weights.ravel()]}, {})


async def run_job(dut, port, job, rng=None, gap=0.0, stall=0.0):
    cfg, image, weights, psum = job
    await configure(dut, port, cfg, weights)
    want = conv_expected(*job)
    sources = {port["i"]: [(int(v), *f) for v, f in zip(image.ravel(), frame_flags(image.shape))]}
    if cfg["mode"] is ConvMode.MAC_PSUM:
        sources[port["psum"]] = [(int(v), *f) for v, f in zip(psum.ravel(), frame_flags(psum.shape))]
    got, stamps = await exchange(dut, sources, {port["o"]: want.size}, rng=rng, gap=gap, stall=stall)
    words = got[port["o"]]
    assert [w[0] for w in words] == want.ravel().tolist(), f"data differ for {cfg}"
    assert [w[1:] for w in words] == frame_flags(want.shape), f"flags differ for {cfg}"
    assert not dut.error.value
    return want.size, stamps


@cocotb.test()
async def random_frames_under_backpressure(dut):
    await start(dut)
    rng = np.random.default_rng(P["seed"])
    port = ports(dut)
    checked = 0
    for n in range(P["frames"]):
        job = conv_job(rng, P["kernel"], P["max_width"], extreme=(n % 4 == 3), max_height=10)
        count, _ = await run_job(dut, port, job, rng, gap=float(rng.uniform(0, 0.5)),
                                 stall=float(rng.uniform(0, 0.6)))
        checked += count
    dut._log.info("convolver: %d output words bit-exact over %d frames", checked, P["frames"])


@cocotb.test()
async def corners(dut):
    """k = 1 and k = K, stride > 1, rows of max_width, saturating words and biases."""
    await start(dut)
    rng = np.random.default_rng(P["seed"] + 1)
    port = ports(dut)
    K, MW = P["kernel"], P["max_width"]
    for kw in [dict(k=1), dict(k=K), dict(k=K, stride=3, width=MW), dict(k=K, width=MW, mode=ConvMode.MAX),
               dict(k=K, width=MW, mode=ConvMode.MAC_PSUM), dict(k=2, stride=2, mode=ConvMode.MAX)]:
        await run_job(dut, port, conv_job(rng, K, MW, extreme=True, **kw), rng, gap=0.3, stall=0.5)


@cocotb.test()
async def full_rate_frame_time(dut):
    """No gaps, no back-pressure: a W x H frame takes W*H + latency cycles."""
    await start(dut)
    rng = np.random.default_rng(P["seed"] + 2)
    port = ports(dut)
    K, MW = P["kernel"], P["max_width"]
    job = conv_job(rng, K, MW, k=K, stride=1, mode=ConvMode.MAC, width=MW, height=K + 4)
    _, stamps = await run_job(dut, port, job)
    first_in, last_out = stamps[port["i"]][0], stamps[port["o"]][-1]
    inputs = stamps[port["i"]]
    assert inputs == list(range(first_in, first_in + len(inputs))), "input was stalled"
    assert last_out - first_in + 1 == job[1].size + P["latency"]
