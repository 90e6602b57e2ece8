"""The control CPU: fetches its program from memory, configures the grid and
the streamer over the configuration bus, waits on status, halts with a code."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from .cfgbus import ConfigBus
from .isa import INSTRUCTION, INSTRUCTION_WORDS, REGISTERS, TABLE_ENTRY, TABLE_ENTRY_WORDS, HaltCode, Opcode
from .membus import memory_bus

__all__ = ["ControlCPU"]


class ControlCPU(wiring.Component):
    """A multi-cycle implementation of :mod:`neuflow_hdl.isa`.

    Each instruction takes a fetch (one bus read) and one execute cycle; a
    load adds a bus read, a configuration read or a WAIT poll
    ``1 + config_latency`` cycles, a ``cfgwt`` one bus read per table entry.  The configuration bus's outputs are
    registered (a write reaches the responders the cycle after its execute
    cycle), so no path runs from the instruction register to the grid.
    The architectural state must equal :class:`sim.golden.iss.ISS` after any program.

    Parameters
    ----------
    memory_words : int
        Size of memory in 16-bit words (a power of two); accesses beyond it
        halt with ``BUS_ERROR``.
    beat_words : int
        Words per memory-bus beat (a power of two, at least 4, so that an
        instruction is one aligned beat).
    config_latency : int
        Cycles from a read's ``re`` on the configuration bus to its ``rdata``
        (1 for a responder answering the next cycle, more where the answers
        are registered on their way).

    Members
    -------
    bus : Out(memory_bus(...))
    cfg : Out(ConfigBus)
    halted : Out(1)
    halt_code : Out(32)
    cycles : Out(32)
        Clock cycles since reset (what CYCLES reads).
    """

    def __init__(self, *, memory_words=1 << 16, beat_words=4, config_latency=1):
        if memory_words < 8 or memory_words & (memory_words - 1):
            raise ValueError(f"memory_words must be a power of two of at least 8, not {memory_words}")
        if beat_words < INSTRUCTION_WORDS or beat_words & (beat_words - 1):
            raise ValueError(f"beat_words must be a power of two of at least {INSTRUCTION_WORDS}, "
                             f"not {beat_words}")
        if not isinstance(config_latency, int) or config_latency < 1:
            raise ValueError(f"config_latency must be a whole number of cycles of at least 1, not {config_latency!r}")
        self._memory_words, self._beat_words = memory_words, beat_words
        self._config_latency = config_latency
        self._addr_width = (memory_words // beat_words - 1).bit_length() or 1
        super().__init__({
            "bus": Out(memory_bus(addr_width=self._addr_width, beat_words=beat_words, width=16)),
            "cfg": Out(ConfigBus),
            "halted": Out(1),
            "halt_code": Out(32),
            "cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        B = self._beat_words
        shift = B.bit_length() - 1          # log2(words per beat)
        regs = Array(Signal(32, name=f"r{n}") for n in range(REGISTERS))
        pc = Signal(32)
        ins = Signal(INSTRUCTION)
        ra = ins.a[:4]                      # the register the MEMORY and read states write
        address = Signal(32)                # ld/st word address

        m.d.sync += self.cycles.eq(self.cycles + 1)
        # The configuration bus, registered: EXECUTE sets these for one cycle.
        cfg = Signal.like(self.cfg.addr, name="cfg_addr"), Signal(32, name="cfg_wdata")
        cfg_we, cfg_re = Signal(), Signal()
        m.d.sync += [cfg_we.eq(0), cfg_re.eq(0)]
        m.d.comb += [self.cfg.addr.eq(cfg[0]), self.cfg.wdata.eq(cfg[1]), self.cfg.we.eq(cfg_we),
                     self.cfg.re.eq(cfg_re)]
        waiting = Signal(range(self._config_latency + 1))
        fetch_word = Signal(32)
        m.d.comb += fetch_word.eq(pc << 2)

        def halt(code):
            m.d.sync += self.halt_code.eq(code)
            m.next = "HALT"

        def read_beat(word, then):
            """Ask the memory for the beat holding word address ``word``; then go to ``then``."""
            m.d.comb += [self.bus.cmd.valid.eq(1), self.bus.cmd.payload.addr.eq(word >> shift),
                         self.bus.cmd.payload.we.eq(0)]
            with m.If(self.bus.cmd.ready):
                m.next = then

        def answer(word):
            """The answered beat from word address ``word`` on (an instruction, a
            table entry or a 32-bit value is its low bits)."""
            return self.bus.resp.payload >> (word[:shift] * 16)

        def advance():
            m.d.sync += pc.eq(pc + 1)
            m.next = "FETCH"

        state = _Architecture(regs, pc, ins, address, halt, advance,
                              cfg_write=lambda addr, wdata: [cfg_we.eq(1), cfg[0].eq(addr), cfg[1].eq(wdata)],
                              cfg_read=lambda addr: [cfg_re.eq(1), cfg[0].eq(addr),
                                                     waiting.eq(self._config_latency)])

        with m.FSM():
            with m.State("FETCH"):
                with m.If((pc >= self._memory_words // INSTRUCTION_WORDS)):
                    halt(HaltCode.BUS_ERROR)
                with m.Else():
                    read_beat(fetch_word, "FETCH_WAIT")
            with m.State("FETCH_WAIT"):
                m.d.comb += self.bus.resp.ready.eq(1)
                with m.If(self.bus.resp.valid):
                    m.d.sync += ins.eq(answer(fetch_word))
                    m.next = "EXECUTE"
            with m.State("EXECUTE"):
                self._execute(m, state)
            with m.State("MEMORY"):
                offset = address[:shift]
                store = ins.op == Opcode.ST
                m.d.comb += [
                    self.bus.cmd.valid.eq(1),
                    self.bus.cmd.payload.addr.eq(address >> shift),
                    self.bus.cmd.payload.we.eq(store),
                    self.bus.cmd.payload.wdata.eq(regs[ra] << (offset * 16)),
                    self.bus.cmd.payload.wmask.eq(Const(0b11, B) << offset),
                ]
                with m.If(self.bus.cmd.ready):
                    with m.If(store):
                        advance()
                    with m.Else():
                        m.next = "LOAD_WAIT"
            with m.State("LOAD_WAIT"):
                m.d.comb += self.bus.resp.ready.eq(1)
                with m.If(self.bus.resp.valid):
                    m.d.sync += regs[ra].eq(answer(address))
                    advance()
            with m.State("TABLE"):                  # cfgwt: read the entry at ``address``
                with m.If(address >= self._memory_words - TABLE_ENTRY_WORDS + 1):
                    halt(HaltCode.BUS_ERROR)
                with m.Else():
                    read_beat(address, "TABLE_WAIT")
            with m.State("TABLE_WAIT"):
                m.d.comb += self.bus.resp.ready.eq(1)
                with m.If(self.bus.resp.valid):
                    entry = Signal(TABLE_ENTRY)
                    m.d.comb += entry.eq(answer(address))
                    with m.If(~entry.skip):
                        m.d.sync += state.cfg_write(entry.address, entry.value)
                    m.d.sync += address.eq(address + TABLE_ENTRY_WORDS)
                    with m.If(entry.last):
                        m.d.sync += regs[ra].eq(address + TABLE_ENTRY_WORDS)
                        advance()
                    with m.Else():
                        m.next = "TABLE"
            with m.State("CONFIG_WAIT"):           # re is on the bus; rdata comes config_latency cycles on
                m.d.sync += waiting.eq(waiting - 1)
                with m.If(waiting == 1):
                    m.next = "CONFIG_READ"
            with m.State("CONFIG_READ"):
                with m.If(ins.op == Opcode.CFGR):
                    m.d.sync += regs[ra].eq(self.cfg.rdata)
                    advance()
                with m.Elif((self.cfg.rdata & ins.a) == ins.b):
                    advance()
                with m.Else():
                    m.next = "EXECUTE"          # poll again
            with m.State("HALT"):
                m.d.comb += self.halted.eq(1)
        return m

    def _execute(self, m, state):
        """The EXECUTE state: one instruction (docs/isa.md), its register and
        configuration-bus effects, and the next state."""
        regs, pc, ins, address = state.regs, state.pc, state.ins, state.address
        halt, advance = state.halt, state.advance
        ra, rb, rc = ins.a[:4], ins.b[:4], ins.c[:4]
        with m.Switch(ins.op):
            with m.Case(Opcode.NOP):
                advance()
            with m.Case(Opcode.HALT):
                halt(ins.imm)
            with m.Case(Opcode.LI):
                m.d.sync += regs[ra].eq(ins.imm)
                advance()
            with m.Case(Opcode.ADD):
                m.d.sync += regs[ra].eq(regs[rb] + regs[rc])
                advance()
            with m.Case(Opcode.ADDI):
                m.d.sync += regs[ra].eq(regs[rb] + ins.imm)
                advance()
            with m.Case(Opcode.SUB):
                m.d.sync += regs[ra].eq(regs[rb] - regs[rc])
                advance()
            with m.Case(Opcode.AND):
                m.d.sync += regs[ra].eq(regs[rb] & regs[rc])
                advance()
            with m.Case(Opcode.OR):
                m.d.sync += regs[ra].eq(regs[rb] | regs[rc])
                advance()
            with m.Case(Opcode.SHR):
                m.d.sync += regs[ra].eq(regs[rb] >> ins.imm[:5])
                advance()
            with m.Case(Opcode.SHL):
                m.d.sync += regs[ra].eq(regs[rb] << ins.imm[:5])
                advance()
            with m.Case(Opcode.LD, Opcode.ST):
                target = (regs[rb] + ins.imm)[:32]
                m.d.sync += address.eq(target)
                with m.If(target[0]):
                    halt(HaltCode.MISALIGNED)
                with m.Elif(target >= self._memory_words - 1):
                    halt(HaltCode.BUS_ERROR)
                with m.Else():
                    m.next = "MEMORY"
            with m.Case(Opcode.CFGW):
                m.d.sync += state.cfg_write(ins.imm[:20], regs[ra])
                advance()
            with m.Case(Opcode.CFGWT):
                m.d.sync += address.eq(regs[ra])
                with m.If((regs[ra] & (TABLE_ENTRY_WORDS - 1)) != 0):
                    halt(HaltCode.MISALIGNED)
                with m.Else():
                    m.next = "TABLE"
            with m.Case(Opcode.CFGWI):
                m.d.sync += state.cfg_write(Cat(ins.a, ins.b, ins.c)[:20], ins.imm)
                advance()
            with m.Case(Opcode.CFGR, Opcode.WAIT):
                m.d.sync += state.cfg_read(ins.imm[:20])
                m.next = "CONFIG_WAIT"
            with m.Case(Opcode.BEQ, Opcode.BNE, Opcode.BLT):
                x, y = regs[ra], regs[rb]
                taken = Mux(ins.op == Opcode.BEQ, x == y,
                            Mux(ins.op == Opcode.BNE, x != y, x.as_signed() < y.as_signed()))
                m.d.sync += pc.eq(Mux(taken, ins.imm, pc + 1))
                m.next = "FETCH"
            with m.Case(Opcode.JMP):
                m.d.sync += pc.eq(ins.imm)
                m.next = "FETCH"
            with m.Case(Opcode.CYCLES):
                m.d.sync += regs[ra].eq(self.cycles)
                advance()
            with m.Default():
                halt(HaltCode.ILLEGAL_INSTRUCTION)


class _Architecture:
    """The CPU's architectural state, its two ways to end an instruction and
    the statements of a configuration write or read, shared by the states of
    :meth:`ControlCPU.elaborate`."""

    def __init__(self, regs, pc, ins, address, halt, advance, *, cfg_write, cfg_read):
        self.regs, self.pc, self.ins, self.address = regs, pc, ins, address
        self.halt, self.advance = halt, advance
        self.cfg_write, self.cfg_read = cfg_write, cfg_read
