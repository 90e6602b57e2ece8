"""The ULX3S top without FPGA tools: its PLL setting and its pins."""

from dataclasses import replace

import pytest

from boards.ulx3s import ULX3STop, pll_setting
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
    for name, value in (("CLKI_DIV", 5), ("CLKFB_DIV", 8), ("CLKOP_DIV", 15)):
        assert f"parameter \\{name} {value}" in rtlil, name
