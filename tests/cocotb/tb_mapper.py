"""cocotb bench: the Mapper on Verilator against the numpy reference."""

import cocotb
import numpy as np

from cases import frame_flags, mapper_config, mapper_segments
from neuflow_hdl.numerics import Q8_8
from neuflow_hdl.regs import Symmetry, mapper_config_layout
from sim.golden import reference
from sim.golden.mapper_fit import fit
from streams import Port, exchange, params, start

P = params()
W = P.get("word_width", 16)
LAYOUT = mapper_config_layout(W, P["segments"])


async def run(dut, config, x, flags, rng, gap, stall):
    dut.config.value = LAYOUT.const(config).as_bits()
    pi, po = Port(dut, "i", W), Port(dut, "o", W)
    got, _ = await exchange(dut, {pi: [(int(v), *f) for v, f in zip(x, flags)]}, {po: len(x)},
                            rng=rng, gap=gap, stall=stall)
    return got[po]


@cocotb.test()
async def random_segments(dut):
    await start(dut)
    rng = np.random.default_rng(P["seed"])
    checked = 0
    for n in range(P["configs"]):
        symmetry = list(Symmetry)[n % 3]
        bounds, slopes, offsets = mapper_segments(rng, symmetry, P["segments"])
        shift = int(rng.integers(0, W + 1))
        x = rng.integers(Q8_8.min, Q8_8.max + 1, P["words"])
        x[:4] = [Q8_8.min, Q8_8.max, 0, -1]
        got = await run(dut, mapper_config(symmetry, shift, bounds, slopes, offsets), x,
                        [(0, 0)] * len(x), rng, float(rng.uniform(0, 0.5)), float(rng.uniform(0, 0.5)))
        want = reference.mapper(x, bounds, slopes, offsets, symmetry=symmetry, shift=shift)
        np.testing.assert_array_equal([w[0] for w in got], want, err_msg=f"config {n}")
        checked += len(x)
    dut._log.info("mapper: %d results bit-exact", checked)


@cocotb.test()
async def fitted_tanh_frame(dut):
    await start(dut)
    rng = np.random.default_rng(P["seed"] + 1)
    result = fit("tanh", P["segments"])
    image = rng.integers(Q8_8.min, Q8_8.max + 1, (8, 40))
    got = await run(dut, result.config(), image.ravel(), frame_flags(image.shape), rng, 0.3, 0.3)
    assert [w[0] for w in got] == result(image).ravel().tolist()
    assert [w[1:] for w in got] == frame_flags(image.shape)
