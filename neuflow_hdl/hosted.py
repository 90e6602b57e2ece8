"""The processor on a board: on-chip memory, a serial host link and run control.

:class:`HostedSoC` is the whole board design short of its clock and pins: the
:class:`~neuflow_hdl.soc.SoC` held in reset until the host starts it, a
block-RAM memory that the processor uses while it runs and the
:class:`~neuflow_hdl.hostlink.HostLink` otherwise, a UART and
four status LEDs.  ``boards/ulx3s.py`` puts it behind the ULX3S's oscillator,
PLL and pins; :class:`HostedSimTop` behind a plain clock input, for the
Verilator board model that the host tool is tested against.
"""

from amaranth.hdl import Module, Mux, ResetInserter, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .hostlink import TIMEOUT_SECONDS, HostLink, RunState
from .membus import memory_bus
from .presets import GridConfig
from .soc import SoC, beat_address_width, power_on_reset
from .uart import UARTReceiver, UARTTransmitter, check_divisor

__all__ = ["OnChipMemory", "HostedSoC", "HostedSimTop", "DRAIN_CYCLES", "LED"]

#: Cycles the processor keeps the memory after it halts, for writes still on their way.
DRAIN_CYCLES = 8

#: The status LEDs, by bit of :attr:`HostedSoC.leds`.
LED = {"idle": 0, "running": 1, "halted": 2, "fault": 3}


class OnChipMemory(wiring.Component):
    """A memory-bus target in block RAM: ``words`` words.  A read's answer is
    registered after the blocks' output multiplexer, so it comes two cycles
    after its command, one beat a cycle, held while the initiator is not
    ready.  (Registering the command instead, before the blocks' address nets,
    left the routed board congested: docs/architecture.md.)"""

    def __init__(self, *, words, beat_words, width, addr_width):
        if words < beat_words or words & (words - 1):
            raise ValueError(f"on-chip memory words must be a power of two of at least a beat, not {words}")
        self._words, self._beat_words, self._width = words, beat_words, width
        super().__init__({"bus": In(memory_bus(addr_width=addr_width, beat_words=beat_words, width=width))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.storage = storage = memory.Memory(
            shape=self._beat_words * self._width, depth=self._words // self._beat_words, init=[])
        write = storage.write_port(granularity=self._width)
        read = storage.read_port(transparent_for=())
        cmd, resp = self.bus.cmd, self.bus.resp
        reading = Signal()              # the blocks' output holds a read's beat (held while not moved on)
        answer = Signal.like(resp.payload)
        moves = reading & (~resp.valid | resp.ready)
        m.d.comb += cmd.ready.eq(~reading | moves)
        taken = cmd.valid & cmd.ready
        m.d.comb += [
            write.addr.eq(cmd.payload.addr), write.data.eq(cmd.payload.wdata),
            write.en.eq(cmd.payload.wmask & (taken & cmd.payload.we).replicate(self._beat_words)),
            read.addr.eq(cmd.payload.addr), read.en.eq(taken & ~cmd.payload.we),
            resp.payload.eq(answer),
        ]
        m.d.sync += reading.eq((taken & ~cmd.payload.we) | (reading & ~moves))
        with m.If(moves):
            m.d.sync += [answer.eq(read.data), resp.valid.eq(1)]
        with m.Elif(resp.ready):
            m.d.sync += resp.valid.eq(0)
        return m


class HostedSoC(wiring.Component):
    """The processor, its on-chip memory (``config.memory_words`` words) and the host link.

    Parameters
    ----------
    config : GridConfig
        The grid, with ``memory_words`` the block RAM's size.
    divisor : int
        Clock cycles of a bit on the serial line.
    timeout : int
        Clock cycles a command frame may pause (default: ``TIMEOUT_SECONDS``
        at ``config.clock_mhz``).

    Members
    -------
    rx : In(1), tx : Out(1)
        The serial line (idle high).
    leds : Out(4)
        Idle, running, halted, fault (:data:`LED`).
    """

    def __init__(self, config, *, divisor, timeout=None):
        if not isinstance(config, GridConfig):
            raise TypeError(f"config must be a GridConfig, not {config!r}")
        self._config, self._divisor = config, check_divisor(divisor)
        self._timeout = timeout or round(TIMEOUT_SECONDS * config.clock_mhz * 1e6)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(len(LED))})

    config = property(lambda self: self._config)

    def elaborate(self, platform):
        m = Module()
        c = self._config
        addr_width = beat_address_width(c)
        state = Signal(RunState)
        draining = Signal(range(DRAIN_CYCLES + 1))
        halt_code, cycles = Signal(32), Signal(32)
        running = Signal()
        m.d.comb += running.eq((state == RunState.RUNNING) | (draining != 0))

        soc = SoC(c)
        m.submodules.soc = ResetInserter(~running)(soc)
        ram = OnChipMemory(words=c.memory_words, beat_words=c.beat_words, width=c.fmt.width,
                           addr_width=addr_width)
        m.submodules.link = link = HostLink(c, timeout=self._timeout, addr_width=addr_width)
        # STOP abandons the processor's reads in flight: their answers must not reach the link.
        m.submodules.memory = ResetInserter(link.stop)(ram)
        m.submodules.receiver = receiver = UARTReceiver(self._divisor)
        m.submodules.transmitter = transmitter = UARTTransmitter(self._divisor)
        _share(m, ram.bus, running, soc.memory, link.bus)
        wiring.connect(m, receiver.o, link.rx)
        wiring.connect(m, link.tx, transmitter.i)
        m.d.comb += [receiver.rx.eq(self.rx), self.tx.eq(transmitter.tx)]

        # Run control: START releases the processor's reset; at its halt the code and
        # cycle count are kept and, once the last writes have landed, it is reset again.
        with m.If(link.stop):
            m.d.sync += [state.eq(RunState.IDLE), draining.eq(0)]
        with m.Elif(link.start):
            m.d.sync += [state.eq(RunState.RUNNING), halt_code.eq(0), cycles.eq(0)]
        with m.Elif((state == RunState.RUNNING) & soc.halted):
            m.d.sync += [state.eq(RunState.HALTED), halt_code.eq(soc.halt_code), cycles.eq(soc.cycles),
                         draining.eq(DRAIN_CYCLES)]
            with m.If(soc.halt_code != 0):
                m.d.sync += state.eq(RunState.FAULT)
        with m.Elif(draining != 0):
            m.d.sync += draining.eq(draining - 1)
        m.d.comb += [
            link.running.eq(running), link.state.eq(state), link.halt_code.eq(halt_code),
            link.cycles.eq(Mux(state == RunState.RUNNING, soc.cycles, cycles)),
        ]
        for name, bit in LED.items():
            m.d.comb += self.leds[bit].eq(state == getattr(RunState, name.upper()))
        return m


def _share(m, memory, which, first, second):
    """``memory`` driven by ``first`` while ``which`` is high, by ``second`` otherwise;
    the other's commands wait.  (The processor held in reset still asks for its
    first instruction, so it must not reach the memory.)"""
    m.d.comb += [
        memory.cmd.valid.eq(Mux(which, first.cmd.valid, second.cmd.valid)),
        memory.cmd.payload.eq(Mux(which, first.cmd.payload.as_value(), second.cmd.payload.as_value())),
        first.cmd.ready.eq(which & memory.cmd.ready),
        second.cmd.ready.eq(~which & memory.cmd.ready),
        memory.resp.ready.eq(Mux(which, first.resp.ready, second.resp.ready)),
    ]
    for initiator, selected in ((first, which), (second, ~which)):
        m.d.comb += [initiator.resp.valid.eq(selected & memory.resp.valid),
                     initiator.resp.payload.eq(memory.resp.payload)]


class HostedSimTop(wiring.Component):
    """:class:`HostedSoC` behind a plain clock input, resetting itself for its
    first :data:`RESET_CYCLES` cycles (as :class:`~neuflow_hdl.soc.SimTop`):
    the top of the Verilator board model (``sim/rtl/board_harness.cpp``).

    Ports: ``clk``, ``rx`` (in), ``tx``, ``leds``."""

    RESET_CYCLES = 4

    def __init__(self, config, *, divisor):
        self._config, self._divisor = config, divisor
        super().__init__({"clk": In(1), "rx": In(1, init=1), "tx": Out(1), "leds": Out(len(LED))})

    def elaborate(self, platform):
        m = Module()
        power_on_reset(m, self.clk, self.RESET_CYCLES)
        m.submodules.hosted = hosted = HostedSoC(self._config, divisor=self._divisor)
        m.d.comb += [hosted.rx.eq(self.rx), self.tx.eq(hosted.tx), self.leds.eq(hosted.leds)]
        return m
