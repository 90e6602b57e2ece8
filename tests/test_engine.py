"""The reference engine's grid model on its own: configuration writes, routes,
forks, streamer windows and status, each against hand-computed expectations
(no compiler, no ISS)."""

import numpy as np
import pytest

from neuflow_hdl.presets import preset
from neuflow_hdl.regs import (GRID_STATUS, GRID_TILE, PORT_STATUS, PORT_STATUS_REG, PORTS_START_REG,
                              STATUS_REG, AluOp, ConvMode, Unit, config_address, decode_address,
                              pack_bits, stream_port_writes, streamer_address, tile_config_writes,
                              unpack_bits)
from sim.golden.engine import EngineError, GridModel

CONFIG = preset("tiny")
SOURCE, TARGET, OTHER = 0x100, 0x200, 0x300


def test_address_layout_round_trips():
    # tile << 12 | unit << 8 | reg, by hand
    assert config_address(3, Unit.ALU, 1) == 0x03301
    assert streamer_address(7, PORT_STATUS_REG) == 0xFE707
    assert decode_address(0x03301) == (3, Unit.ALU.value, 1)
    assert decode_address(0xFE707) == (0xFE, 7, PORT_STATUS_REG)
    assert decode_address(config_address(GRID_TILE, Unit.CONTROL, 0x10)) == (0xFF, 0, 0x10)
    assert unpack_bits(GRID_STATUS, 0b101) == {"busy": 1, "error": 0, "global_conflict": 1,
                                               "reserved": 0}


def _model(words):
    memory = np.zeros(0x400, dtype=np.int64)
    memory[SOURCE:SOURCE + len(words)] = np.asarray(words) & 0xFFFF
    return GridModel(CONFIG, memory), memory


def _tile(model, tile, routes, start=True, **units):
    for address, value in tile_config_writes(tile, globals_=CONFIG.globals_, fifos=CONFIG.fifos,
                                             routes=routes, start=start, **units):
        model.write(address, value)


def _port(model, port, base, *, width=3, height=2, write=False, line=0, start=True, **window):
    for address, value in stream_port_writes(port, base=base, width=width, height=height, write=write,
                                             line=line, start=start, **window):
        model.write(address, value)


def _status(model, port):
    return unpack_bits(PORT_STATUS, model.read(streamer_address(port, PORT_STATUS_REG)))


def _signed(memory, base, n=6):
    words = memory[base:base + n]
    return list(np.where(words >= 1 << 15, words - (1 << 16), words))


def test_writes_wait_in_the_shadow_until_start():
    """Routes written without start change nothing: the read port's frame waits
    on its line (busy), and the tile's start delivers it through the FIFO."""
    model, memory = _model([1, 2, 3, 4, 5, 6])
    _tile(model, 0, {"fifo_0_in": "global_in_0", "global_out_0": "fifo_0"}, start=False)
    _port(model, 1, TARGET, write=True)
    _port(model, 0, SOURCE)
    assert _status(model, 0)["busy"] == 1 and _status(model, 1)["busy"] == 1
    assert _signed(memory, TARGET) == [0] * 6
    model.write(config_address(0, Unit.CONTROL, 0), 1)            # CONTROL.start
    assert _signed(memory, TARGET) == [1, 2, 3, 4, 5, 6]
    assert _status(model, 0) == _status(model, 1) == {"busy": 0, "done": 1, "error": 0,
                                                      "reserved": 0}


def test_a_fork_copies_the_frame_to_every_reader():
    model, memory = _model([7, -8, 9, 10, -11, 12])
    _tile(model, 0, {"fifo_0_in": "global_in_0", "global_out_0": "fifo_0"})
    _tile(model, 3, {"fifo_1_in": "global_in_0", "global_out_1": "fifo_1"})
    _port(model, 1, TARGET, write=True, line=0)
    _port(model, 2, OTHER, write=True, line=1)
    model.write(streamer_address(0, PORTS_START_REG), 0)          # a mask of no port starts none
    _port(model, 0, SOURCE)
    assert _signed(memory, TARGET) == _signed(memory, OTHER) == [7, -8, 9, 10, -11, 12]


def test_alu_with_a_constant_saturates():
    """a + 3 on Q8.8 codes: 32767 + 3 saturates, -2 + 3 = 1."""
    model, memory = _model([1, -2, 32767, -32768, 0, 100])
    _tile(model, 2, {"alu_a": "global_in_2", "global_out_0": "alu"},
          alu={"op": AluOp.ADD, "b_const": 1, "shift": 0, "const": 3})
    _port(model, 1, TARGET, write=True, line=0)
    _port(model, 0, SOURCE, line=2)
    assert _signed(memory, TARGET) == [4, 1, 32767, -32765, 3, 103]


def test_a_port_outside_its_window_touches_nothing():
    model, memory = _model([1, 2, 3, 4, 5, 6])
    before = memory.copy()
    with pytest.raises(EngineError, match="leaves its window"):
        _port(model, 0, TARGET, write=True, window_base=TARGET, window_size=5)   # 6 words needed
    assert _status(model, 0)["error"] == 1
    assert np.array_equal(memory, before)


def test_status_reports_a_tile_holding_a_frame():
    """A MAC_PSUM convolver holds its input until a partial sum arrives: the tile
    and the grid read busy; nothing is written."""
    model, memory = _model([1, 2, 3, 4, 5, 6])
    _tile(model, 1, {"convolver_in": "global_in_0", "convolver_psum": "global_in_1",
                     "global_out_0": "convolver"},
          convolver={"width": 3, "height": 2, "k": 1, "stride": 1, "mode": ConvMode.MAC_PSUM})
    assert unpack_bits(GRID_STATUS, model.read(config_address(GRID_TILE, Unit.CONTROL, 0)))["busy"] == 0
    _port(model, 0, SOURCE)
    assert unpack_bits(GRID_STATUS, model.read(config_address(GRID_TILE, Unit.CONTROL, 0)))["busy"] == 1
    assert model.read(config_address(1, Unit.CONTROL, STATUS_REG)) == 1
    assert model.read(config_address(0, Unit.CONTROL, STATUS_REG)) == 0
    assert _signed(memory, TARGET) == [0] * 6


def test_two_drivers_of_one_global_line_are_an_error():
    model, _ = _model([1, 2, 3, 4, 5, 6])
    _tile(model, 0, {"fifo_0_in": "global_in_0", "global_out_0": "fifo_0"})
    _tile(model, 1, {"fifo_0_in": "global_in_0", "global_out_0": "fifo_0"})
    with pytest.raises(EngineError, match=r"global output line 0 is driven by tiles \[0, 1\]"):
        _port(model, 0, SOURCE)


def test_grid_start_mask_starts_the_tiles_named():
    """One GRID_START_REG write with bits 0 and 3 starts tiles 0 and 3 only."""
    model, memory = _model([5, 6, 7, 8, 9, 10])
    _tile(model, 0, {"fifo_0_in": "global_in_0", "global_out_0": "fifo_0"}, start=False)
    _tile(model, 3, {"fifo_0_in": "global_in_1", "global_out_1": "fifo_0"}, start=False)
    model.write(config_address(GRID_TILE, Unit.CONTROL, 0x10), 0b1001)
    _port(model, 1, TARGET, write=True, line=0)
    _port(model, 2, OTHER, write=True, line=1)
    _port(model, 0, SOURCE, line=0)
    _port(model, 3, SOURCE, line=1)
    assert _signed(memory, TARGET) == _signed(memory, OTHER) == [5, 6, 7, 8, 9, 10]
    assert pack_bits(GRID_STATUS, {}) == model.read(config_address(GRID_TILE, Unit.CONTROL, 0))
