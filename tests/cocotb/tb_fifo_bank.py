"""cocotb bench: the FIFO bank on Verilator: order kept, nothing lost, chaining."""

import cocotb
import numpy as np

from streams import Port, exchange, params, start

P = params()
W = P.get("word_width", 16)


@cocotb.test()
async def independent_and_chained(dut):
    await start(dut)
    rng = np.random.default_rng(P["seed"])
    count = P["count"]
    ins = [Port(dut, f"i__{n}", W) for n in range(count)]
    outs = [Port(dut, f"o__{n}", W) for n in range(count)]
    dut.chain.value = 0
    data = [rng.integers(-32768, 32768, P["words"]) for _ in range(count)]
    got, _ = await exchange(dut, {p: [(int(v), 0, 0) for v in d] for p, d in zip(ins, data)},
                            {p: len(d) for p, d in zip(outs, data)}, rng=rng, gap=0.4, stall=0.5)
    for n in range(count):
        assert [w[0] for w in got[outs[n]]] == data[n].tolist(), f"FIFO {n}"
    dut.chain.value = (1 << count) - 2          # all chained: i[0] -> o[count-1]
    stream = rng.integers(-32768, 32768, P["words"])
    got, _ = await exchange(dut, {ins[0]: [(int(v), 1, 0) for v in stream]},
                            {outs[-1]: len(stream)}, rng=rng, gap=0.2, stall=0.7)
    assert [w for w in got[outs[-1]]] == [(int(v), 1, 0) for v in stream]
