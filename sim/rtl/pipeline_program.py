"""A hand-written control program: a three-layer pipeline on one pass of the grid.

5x5 convolution + tanh (tile 0,0) -> 2x2 max pooling (tile 0,1, via the east
link) -> 3x3 convolution + relu (tile 1,1 via the south link, or tile 0,2 via
the east link on a grid of three columns), from an image in memory to a
result in memory.  Weights come from memory through two
streamer ports first; then the image streams in and the result streams out.
It is both a test of the whole processor and the workload of ``make bench``.
"""

from dataclasses import dataclass

import numpy as np

from neuflow_hdl.regs import (ConvMode, PORT_STATUS_REG, stream_port_writes, streamer_address,
                              tile_config_writes)
from sim.golden import reference
from sim.golden.asm import assemble, to_words
from sim.golden.mapper_fit import fit

__all__ = ["Pipeline", "three_layer_pipeline"]

PROGRAM_END, WEIGHTS5, WEIGHTS3, IMAGE, OUTPUT, TIMES = 0x800, 0x1000, 0x1040, 0x2000, 0x8000, 0x7F0


@dataclass
class Pipeline:
    source: str             #: the assembly program
    image: np.ndarray       #: the memory image (program, weights, input)
    expected: np.ndarray    #: the result the reference computes (codes)
    output: int             #: word address of the result
    times: int              #: word address of the recorded cycle counts (start, end)


def _cfg(writes):
    return [f"    cfgwi {address:#07x}, {word & 0xFFFFFFFF:#x}" for address, word in writes]


def three_layer_pipeline(config, rng, *, height=48, width=64, repeat=1):
    """Build the program, memory image and expected result for grid ``config``:
    three tiles along a path, (0,0) -> east (0,1) -> then east (0,2) on a grid of
    three columns or more, else south (1,1); K >= 5; rows of ``width`` words.
    ``repeat`` streams the image through the pipeline that many times (the
    result is the same each time), for a longer benchmark."""
    if config.columns < 2 or config.rows * config.columns < 3 or config.kernel < 5 \
            or config.max_width < width:
        raise ValueError("the three-layer pipeline needs three tiles in an L or a row, K >= 5 "
                         f"and rows of {width} words")
    east = config.columns >= 3
    third = (0, 2) if east else (1, 1)
    link_out, link_in = ("east_out", "west_in") if east else ("south_out", "north_in")
    G, F, S = config.globals_, config.fifos, config.segments
    image = rng.integers(-512, 512, (height, width))
    w5 = rng.integers(-40, 40, (5, 5))
    w3 = rng.integers(-120, 120, (3, 3))
    bias = int(rng.integers(-3000, 3000))
    tanh, relu = fit("tanh", S), fit("relu", S)
    h1, w1 = height - 4, width - 4
    h2, w2 = h1 // 2, w1 // 2
    h3, w3_ = h2 - 2, w2 - 2
    expected = relu(reference.conv2d(
        reference.window_max(tanh(reference.conv2d(image, w5, bias=bias, shift=8)), 2, stride=2),
        w3, shift=8))

    def tile(r, c, **kw):
        return _cfg(tile_config_writes(r * config.columns + c, globals_=G, fifos=F, segments=S,
                                       width=config.fmt.width, **kw))

    def wait_port(port):
        # PORT_STATUS: busy bit 0, done bit 1; wait for done and not busy.
        return [f"    wait 0x03, 0x02, {streamer_address(port, PORT_STATUS_REG):#07x}"]

    lines = ["; three-layer pipeline: conv5x5+tanh -> maxpool2x2 -> conv3x3+relu",
             "    cycles r1",
             f"    st r1, {TIMES}(r0)"]
    lines += ["; tile (0,0): 5x5 convolution, tanh, east"]
    lines += tile(0, 0, routes={"convolver_in": "global_in_0", "convolver_weights": "global_in_1",
                                "mapper_in": "convolver", "east_out": "mapper"},
                  convolver={"width": width, "height": height, "k": 5, "stride": 1,
                             "mode": ConvMode.MAC, "shift": 8, "bias": bias},
                  mapper=tanh.config())
    lines += [f"; tile (0,1): 2x2 max pooling, to tile {third}"]
    lines += tile(0, 1, routes={"convolver_in": "west_in", link_out: "convolver"},
                  convolver={"width": w1, "height": h1, "k": 2, "stride": 2, "mode": ConvMode.MAX,
                             "shift": 0, "bias": 0})
    lines += [f"; tile {third}: 3x3 convolution, relu, global line 3"]
    lines += tile(*third, routes={"convolver_in": link_in, "convolver_weights": "global_in_2",
                                "mapper_in": "convolver", "global_out_3": "mapper"},
                  convolver={"width": w2, "height": h2, "k": 3, "stride": 1, "mode": ConvMode.MAC,
                             "shift": 8, "bias": 0},
                  mapper=relu.config())
    lines += ["; weights: port 0 -> line 1, port 1 -> line 2"]
    lines += _cfg(stream_port_writes(0, base=WEIGHTS5, width=25, height=1, line=1))
    lines += _cfg(stream_port_writes(1, base=WEIGHTS3, width=9, height=1, line=2))
    lines += wait_port(0) + wait_port(1)
    lines += ["; image in on line 0 (port 0), result out from line 3 (port 1), `repeat` times",
              f"    li r5, {repeat}", "    li r6, 0", "frame:"]
    lines += _cfg(stream_port_writes(1, base=OUTPUT, width=w3_, height=h3, line=3, write=True,
                                     window_base=OUTPUT, window_size=h3 * w3_))
    lines += _cfg(stream_port_writes(0, base=IMAGE, width=width, height=height, line=0))
    lines += wait_port(1)
    lines += ["    addi r5, r5, -1", "    bne r5, r6, frame"]
    lines += ["    cycles r1", f"    st r1, {TIMES + 2}(r0)", "    halt 0"]
    source = "\n".join(lines)
    program = to_words(assemble(source))
    if len(program) > PROGRAM_END:
        raise ValueError("program overflows its area")
    memory = np.zeros(OUTPUT + h3 * w3_ + 16, dtype=np.int64)
    memory[:len(program)] = program
    memory[WEIGHTS5:WEIGHTS5 + 25] = w5.ravel() & 0xFFFF
    memory[WEIGHTS3:WEIGHTS3 + 9] = w3.ravel() & 0xFFFF
    memory[IMAGE:IMAGE + image.size] = image.ravel() & 0xFFFF
    return Pipeline(source, memory, expected, OUTPUT, TIMES)
