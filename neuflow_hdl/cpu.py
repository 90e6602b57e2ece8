"""The control CPU: fetches its program from memory, configures the grid and
the streamer over the configuration bus, waits on status, halts with a code."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from .cfgbus import ConfigBus
from .isa import INSTRUCTION, INSTRUCTION_WORDS, REGISTERS, HaltCode, Opcode
from .membus import memory_bus

__all__ = ["ControlCPU"]


class ControlCPU(wiring.Component):
    """A multi-cycle implementation of :mod:`neuflow_hdl.isa`.

    Each instruction takes a fetch (one bus read) and one execute cycle; a
    load adds a bus read, a configuration read or a WAIT poll one cycle each.
    The architectural state must equal :class:`sim.golden.iss.ISS` after any program.

    Parameters
    ----------
    memory_words : int
        Size of memory in 16-bit words (a power of two); accesses beyond it
        halt with ``BUS_ERROR``.
    beat_words : int
        Words per memory-bus beat (a power of two, at least 4, so that an
        instruction is one aligned beat).

    Members
    -------
    bus : Out(memory_bus(...))
    cfg : Out(ConfigBus)
    halted : Out(1)
    halt_code : Out(32)
    cycles : Out(32)
        Clock cycles since reset (what CYCLES reads).
    """

    def __init__(self, *, memory_words=1 << 16, beat_words=4):
        if memory_words < 8 or memory_words & (memory_words - 1):
            raise ValueError(f"memory_words must be a power of two of at least 8, not {memory_words}")
        if beat_words < INSTRUCTION_WORDS or beat_words & (beat_words - 1):
            raise ValueError(f"beat_words must be a power of two of at least {INSTRUCTION_WORDS}, "
                             f"not {beat_words}")
        self._memory_words, self._beat_words = memory_words, beat_words
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
        fetch_word = Signal(32)
        m.d.comb += fetch_word.eq(pc << 2)

        def halt(code):
            m.d.sync += self.halt_code.eq(code)
            m.next = "HALT"

        def advance():
            m.d.sync += pc.eq(pc + 1)
            m.next = "FETCH"

        state = _Architecture(regs, pc, ins, address, halt, advance)

        with m.FSM():
            with m.State("FETCH"):
                with m.If((pc >= self._memory_words // INSTRUCTION_WORDS)):
                    halt(HaltCode.BUS_ERROR)
                with m.Else():
                    m.d.comb += [self.bus.cmd.valid.eq(1), self.bus.cmd.payload.addr.eq(fetch_word >> shift),
                                 self.bus.cmd.payload.we.eq(0)]
                    with m.If(self.bus.cmd.ready):
                        m.next = "FETCH_WAIT"
            with m.State("FETCH_WAIT"):
                m.d.comb += self.bus.resp.ready.eq(1)
                with m.If(self.bus.resp.valid):
                    offset = fetch_word[:shift] if shift else 0
                    m.d.sync += ins.eq(self.bus.resp.payload >> (offset * 16))
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
                    m.d.sync += regs[ra].eq(self.bus.resp.payload >> (address[:shift] * 16))
                    advance()
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
                m.d.comb += [self.cfg.we.eq(1), self.cfg.addr.eq(ins.imm[:20]),
                             self.cfg.wdata.eq(regs[ra])]
                advance()
            with m.Case(Opcode.CFGWI):
                m.d.comb += [self.cfg.we.eq(1), self.cfg.addr.eq(Cat(ins.a, ins.b, ins.c)[:20]),
                             self.cfg.wdata.eq(ins.imm)]
                advance()
            with m.Case(Opcode.CFGR, Opcode.WAIT):
                m.d.comb += [self.cfg.re.eq(1), self.cfg.addr.eq(ins.imm[:20])]
                m.next = "CONFIG_READ"
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
    """The CPU's architectural state and its two ways to end an instruction,
    shared by the states of :meth:`ControlCPU.elaborate`."""

    def __init__(self, regs, pc, ins, address, halt, advance):
        self.regs, self.pc, self.ins, self.address = regs, pc, ins, address
        self.halt, self.advance = halt, advance
