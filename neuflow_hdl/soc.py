"""The processor: control CPU, configuration bus, grid, streamer, one memory port."""

from amaranth.hdl import ClockDomain, ClockSignal, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .cfgbus import RESPONDER_READ_LATENCY
from .cpu import ControlCPU
from .grid import Grid
from .membus import memory_bus
from .presets import GridConfig
from .streamer import BusArbiter, Streamer

__all__ = ["SoC", "SimTop", "beat_address_width", "power_on_reset", "CONFIG_READ_LATENCY"]

#: Cycles from the CPU's configuration read to its answer: the responders'
#: latency, and their ORed answers registered on the way back.
CONFIG_READ_LATENCY = RESPONDER_READ_LATENCY + 1


def beat_address_width(config):
    """Bits of a beat address on the memory bus of ``config``'s processor."""
    return max((config.memory_words // config.beat_words - 1).bit_length(), 1)


class SoC(wiring.Component):
    """CPU + grid + streamer behind one memory bus.

    The CPU's configuration bus reaches the grid (tiles, grid status) and the
    streamer (tile ``STREAMER_TILE``); the memory bus is shared by the CPU and
    every streamer port through a round-robin :class:`BusArbiter`.

    Members
    -------
    memory : Out(memory_bus(...))
    halted : Out(1)
    halt_code : Out(32)
    cycles : Out(32)
    """

    def __init__(self, config):
        if not isinstance(config, GridConfig):
            raise TypeError(f"config must be a GridConfig, not {config!r}")
        self._config = config
        self.addr_width = beat_address_width(config)
        super().__init__({
            "memory": Out(memory_bus(addr_width=self.addr_width, beat_words=config.beat_words,
                                     width=config.fmt.width)),
            "halted": Out(1),
            "halt_code": Out(32),
            "cycles": Out(32),
        })

    config = property(lambda self: self._config)

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.submodules.cpu = cpu = ControlCPU(memory_words=c.memory_words, beat_words=c.beat_words,
                                            config_latency=CONFIG_READ_LATENCY)
        m.submodules.grid = grid = Grid(c)
        m.submodules.streamer = streamer = Streamer(
            ports=c.ports, globals_=c.globals_, memory_words=c.memory_words,
            beat_words=c.beat_words, fmt=c.fmt)
        m.submodules.arbiter = arbiter = BusArbiter(
            c.ports + 1, addr_width=self.addr_width, beat_words=c.beat_words, width=c.fmt.width)
        wiring.connect(m, cpu.bus, arbiter.initiator[0])
        for p in range(c.ports):
            wiring.connect(m, streamer.bus[p], arbiter.initiator[p + 1])
        wiring.connect(m, arbiter.memory, wiring.flipped(self.memory))
        for g in range(c.globals_):
            wiring.connect(m, streamer.to_grid[g], grid.global_in[g])
            wiring.connect(m, grid.global_out[g], streamer.from_grid[g])
        # One controller, two responders on the configuration bus: each answers
        # only its own addresses (0 otherwise), so their answers are ORed.
        for responder in (grid.bus, streamer.cfg):
            m.d.comb += [responder.addr.eq(cpu.cfg.addr), responder.wdata.eq(cpu.cfg.wdata),
                         responder.we.eq(cpu.cfg.we), responder.re.eq(cpu.cfg.re)]
        m.d.sync += cpu.cfg.rdata.eq(grid.bus.rdata | streamer.cfg.rdata)
        m.d.comb += [
            self.halted.eq(cpu.halted), self.halt_code.eq(cpu.halt_code), self.cycles.eq(cpu.cycles),
        ]
        return m


def power_on_reset(m, clk, cycles):
    """Clock the ``sync`` domain by ``clk`` and hold it in reset for its first
    ``cycles`` cycles (a counter in a reset-less ``power`` domain)."""
    m.domains.power = ClockDomain(reset_less=True)
    m.domains.sync = ClockDomain()
    resetting = Signal(range(cycles + 1), init=cycles)
    with m.If(resetting != 0):
        m.d.power += resetting.eq(resetting - 1)
    m.d.comb += [ClockSignal("power").eq(clk), ClockSignal("sync").eq(clk), ResetSignal("sync").eq(resetting != 0)]


class SimTop(wiring.Component):
    """The SoC with its memory bus as plain top-level ports, for a simulation
    harness that is the memory (``sim/rtl/harness.cpp`` on Verilator).

    The top resets itself: a power-on counter holds the SoC in reset for its
    first :data:`RESET_CYCLES` clock cycles, so reset is no top-level input.
    (Amaranth folds a domain's reset into every register's next-state logic;
    with reset an input, Verilator re-evaluates all that logic whenever an
    input may have changed, twice a cycle.)

    The inputs from the memory (``cmd_ready``, ``resp_valid``, ``resp_data``)
    are registered: the value driven before a rising edge is the one the SoC
    sees during the next cycle.  A memory model that computes them from its
    own registered state (as a bus slave's outputs are) drives them one cycle
    ahead, and nothing in the SoC depends combinationally on a top-level
    input, so Verilator's input-combinational region is empty.

    Ports: ``clk``; ``halted``, ``halt_code``, ``cycles``; the command ``cmd_valid``,
    ``cmd_ready`` (in), ``cmd_addr`` (a beat address), ``cmd_we``,
    ``cmd_wdata``, ``cmd_wmask``; the response ``resp_valid`` (in),
    ``resp_ready``, ``resp_data`` (in).  Word ``n`` of a beat is bits
    ``n*width`` and up.
    """

    RESET_CYCLES = 4

    def __init__(self, config):
        self._config = config
        self.addr_width = beat_address_width(config)
        beat_bits = config.beat_words * config.fmt.width
        super().__init__({
            "clk": In(1),
            "halted": Out(1), "halt_code": Out(32), "cycles": Out(32),
            "cmd_valid": Out(1), "cmd_ready": In(1), "cmd_addr": Out(self.addr_width),
            "cmd_we": Out(1), "cmd_wdata": Out(beat_bits), "cmd_wmask": Out(config.beat_words),
            "resp_valid": In(1), "resp_ready": Out(1), "resp_data": In(beat_bits),
        })

    def elaborate(self, platform):
        m = Module()
        power_on_reset(m, self.clk, self.RESET_CYCLES)
        m.submodules.soc = soc = SoC(self._config)
        cmd, resp = soc.memory.cmd, soc.memory.resp
        cmd_ready, resp_valid = Signal(), Signal()
        resp_data = Signal.like(self.resp_data)
        m.d.power += [cmd_ready.eq(self.cmd_ready), resp_valid.eq(self.resp_valid), resp_data.eq(self.resp_data)]
        m.d.comb += [
            self.halted.eq(soc.halted), self.halt_code.eq(soc.halt_code), self.cycles.eq(soc.cycles),
            self.cmd_valid.eq(cmd.valid), cmd.ready.eq(cmd_ready),
            self.cmd_addr.eq(cmd.payload.addr), self.cmd_we.eq(cmd.payload.we),
            self.cmd_wdata.eq(cmd.payload.wdata), self.cmd_wmask.eq(cmd.payload.wmask),
            resp.valid.eq(resp_valid), self.resp_ready.eq(resp.ready),
            resp.payload.eq(resp_data),
        ]
        return m
