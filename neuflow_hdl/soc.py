"""The processor: control CPU, configuration bus, grid, streamer, one memory port."""

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from .cpu import ControlCPU
from .grid import Grid
from .membus import memory_bus
from .presets import GridConfig
from .streamer import BusArbiter, Streamer

__all__ = ["SoC", "SimTop"]


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
        self.addr_width = max((config.memory_words // config.beat_words - 1).bit_length(), 1)
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
        m.submodules.cpu = cpu = ControlCPU(memory_words=c.memory_words, beat_words=c.beat_words)
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
        m.d.comb += [
            cpu.cfg.rdata.eq(grid.bus.rdata | streamer.cfg.rdata),
            self.halted.eq(cpu.halted), self.halt_code.eq(cpu.halt_code), self.cycles.eq(cpu.cycles),
        ]
        return m


class SimTop(wiring.Component):
    """The SoC with the behavioural memory ``neuflow_sim_memory`` (sim/rtl/sim_memory.v).

    The memory loads ``+image=FILE`` ($readmemh) at time zero, answers reads
    after ``+latency=N`` cycles plus up to ``+jitter=J`` random cycles (in
    order), and writes itself to ``+dump=FILE`` ($writememh) when the CPU
    halts.  For Verilator only (Amaranth's simulator cannot run the Verilog
    memory).
    """

    def __init__(self, config):
        self._config = config
        super().__init__({"halted": Out(1), "halt_code": Out(32), "cycles": Out(32)})

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.submodules.soc = soc = SoC(c)
        bus = soc.memory
        m.submodules.memory = Instance(
            "neuflow_sim_memory",
            p_WORDS=c.memory_words, p_BEAT=c.beat_words, p_AW=soc.addr_width, p_WIDTH=c.fmt.width,
            i_clk=ClockSignal(), i_rst=ResetSignal(),
            i_cmd_valid=bus.cmd.valid, o_cmd_ready=bus.cmd.ready,
            i_cmd_addr=bus.cmd.payload.addr, i_cmd_we=bus.cmd.payload.we,
            i_cmd_wdata=bus.cmd.payload.wdata, i_cmd_wmask=bus.cmd.payload.wmask,
            o_resp_valid=bus.resp.valid, i_resp_ready=bus.resp.ready, o_resp_data=bus.resp.payload,
            i_dump=soc.halted,
        )
        m.d.comb += [self.halted.eq(soc.halted), self.halt_code.eq(soc.halt_code),
                     self.cycles.eq(soc.cycles)]
        return m
