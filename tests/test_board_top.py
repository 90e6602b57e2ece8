"""The ULX3S top without FPGA tools: its PLL setting and its pins."""

import re
from dataclasses import replace

import pytest

from boards.synth import SynthReport
from boards.ulx3s import ULX3STop, pll_setting, timing_met
from neuflow_hdl.presets import board


@pytest.mark.parametrize("input_mhz, output_mhz", [(25, 40), (25, 50), (25, 100), (25, 62.5)])
def test_pll_setting_makes_the_clock_exactly(input_mhz, output_mhz):
    clki, clkfb, clkop = pll_setting(input_mhz, output_mhz)
    assert input_mhz * clkfb / clki == pytest.approx(output_mhz, abs=1e-9)
    assert 3.125 <= input_mhz / clki <= 400 and 400 <= output_mhz * clkop <= 800


def test_pll_setting_for_the_board_clock():
    assert pll_setting(25, 40) == (5, 8, 15)        # 5 MHz at the phase detector, VCO 600 MHz


def test_pll_setting_refuses_an_impossible_clock():
    with pytest.raises(ValueError, match="no ECP5 PLL setting"):
        pll_setting(25, 1000)


def test_a_bitstream_is_packed_only_from_a_placement_that_meets_the_clock():
    def report(seed, fmax, routed=True):
        return SynthReport("top", 1, 1, 1, 1, fmax, 1.0, routed=routed, seed=seed)
    slow, fast, unrouted = report(1, 27.5), report(2, 33.4), report(3, 41.0, routed=False)
    assert timing_met([slow, fast, unrouted], 30.0) is fast
    assert timing_met([slow, unrouted], 30.0) is None          # routed, but slower than the clock
    assert timing_met([report(4, 30.0)], 30.0).seed == 4       # exactly the clock is met


def test_the_bitstream_command_refuses_a_placement_slower_than_the_clock(monkeypatch, tmp_path, capsys):
    import boards.ulx3s
    from sim.app.cli import main
    slow = SynthReport("top", 1, 1, 1, 1, 27.5, 1.0, routed=True, seed=1)
    monkeypatch.setattr(boards.ulx3s, "bitstream", lambda *args, **kwargs: ([slow], None))
    (tmp_path / "ulx3s-85f").mkdir()        # made by the build it replaces
    assert main(["board", "bitstream", "--build-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    clock = board("ulx3s-85f").clock_mhz
    assert len(err.splitlines()) == 1 and "27.5 MHz" in err and f"{clock:g} MHz clock" in err


def test_board_top_pins_and_pll():
    """The top on the board's platform: the FT231X's pins, the LEDs, the PLL (a tiny grid, for speed)."""
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    spec = replace(board("ulx3s-85f"), grid="tiny", memory_words=1 << 10)
    plan = ULX3S_85F_Platform().prepare(ULX3STop(spec), name="top")
    lpf = plan.files["top.lpf"]
    for pin in ("M1", "L4", "G2", "B2", "C2", "C1", "D2", "H3"):    # uart rx, tx; clk25; LEDs 0-3, 7
        assert f'SITE "{pin}"' in lpf, pin
    rtlil = plan.files["top.il"]
    assert "EHXPLLL" in rtlil
    for name, value in zip(("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV"), pll_setting(25, spec.clock_mhz)):
        assert f"parameter \\{name} {value}" in rtlil, name


def test_nothing_outside_the_grid_multiplies():
    """The processor around the grid and the board's parts use no multiplier
    (a ``$mul`` would take a MULT18X18D the grid needs: 153 of the 85F's 156)."""
    from amaranth.back import rtlil

    from neuflow_hdl.cpu import ControlCPU
    from neuflow_hdl.hosted import OnChipMemory
    from neuflow_hdl.hostlink import HostLink
    from neuflow_hdl.soc import beat_address_width
    from neuflow_hdl.streamer import Streamer
    from neuflow_hdl.uart import UARTReceiver, UARTTransmitter
    c = board("ulx3s-85f").config
    width = beat_address_width(c)
    parts = [lambda: Streamer(ports=c.ports, globals_=c.globals_, memory_words=c.memory_words,
                              beat_words=c.beat_words, fmt=c.fmt),
             lambda: ControlCPU(memory_words=c.memory_words, beat_words=c.beat_words),
             lambda: HostLink(c, timeout=1000, addr_width=width),
             lambda: OnChipMemory(words=1 << 10, beat_words=c.beat_words, width=16, addr_width=width),
             lambda: UARTReceiver(40), lambda: UARTTransmitter(40)]
    for make in parts:
        part = make()
        assert _variable_products(rtlil.convert(part)) == 0, type(part).__name__


def test_a_tile_multiplies_only_in_its_operators():
    """A tile's multiplier blocks are its convolver's K x K products, the
    StreamALU's and the mapper's: no control logic multiplies two signals
    (a preload bank that compared its count with p * p once took a block)."""
    from amaranth.back import rtlil

    from neuflow_hdl.tile import Tile
    c = board("ulx3s-85f").config
    tile = Tile(kernel=c.kernel, max_width=c.max_width, globals_=c.globals_, fifos=c.fifos,
                fifo_depth=c.fifo_depth, segments=c.segments, fmt=c.fmt)
    assert _variable_products(rtlil.convert(tile)) == c.kernel ** 2 + 2


def _variable_products(text):
    """``$mul`` cells of the RTLIL ``text`` whose operands are both signals
    (a product by a constant is a shift or a few adds, never a multiplier block)."""
    count = 0
    for cell in re.findall(r"cell \$mul .*?\n\s*end", text, re.S):
        operands = re.findall(r"connect \\[AB] (\S+)", cell)
        count += not any(re.fullmatch(r"\d+'[01xz]+", operand) for operand in operands)
    return count
