"""Instruction-set simulator: the control CPU's golden model.

Architectural state (registers, program counter, memory, halt code) must
match the gateware exactly after every program; cycle counts need not (the
CYCLES instruction reads the model's own instruction count).
"""

import numpy as np

from neuflow_hdl.isa import (INSTRUCTION_WORDS, REGISTERS, TABLE_ENTRY_WORDS, HaltCode, Opcode, decode,
                             table_fields)

__all__ = ["ISS", "ConfigRecorder"]

MASK32 = 0xFFFF_FFFF


class ConfigRecorder:
    """A configuration bus that records writes and answers reads from ``reads``
    (a function of the address, default 0)."""

    def __init__(self, reads=None):
        self.writes = []
        self._reads = reads or (lambda address: 0)

    def write(self, address, data):
        self.writes.append((address, data))

    def read(self, address):
        return self._reads(address) & MASK32


class ISS:
    """Runs a program held in ``memory`` (an array of 16-bit words, copied)."""

    def __init__(self, memory, config=None, *, width=16, wait_limit=1_000_000):
        self.memory = np.array(memory, dtype=np.int64) & ((1 << width) - 1)
        self.config = config or ConfigRecorder()
        self.width = width
        self.regs = [0] * REGISTERS
        self.pc = 0
        self.halted = False
        self.halt_code = None
        self.steps = 0
        self.wait_limit = wait_limit

    def _halt(self, code):
        self.halted, self.halt_code = True, int(code) & MASK32

    def _word_range(self, address, count):
        return 0 <= address and address + count <= len(self.memory)

    def _load32(self, address):
        lo, hi = self.memory[address], self.memory[address + 1]
        return int(lo) | (int(hi) << self.width) if self.width == 16 else int(lo) & MASK32

    def _load64(self, address):
        """An instruction or a table entry: 4 words, little-endian."""
        return sum(int(self.memory[address + n]) << (self.width * n) for n in range(INSTRUCTION_WORDS))

    def _store32(self, address, value):
        mask = (1 << self.width) - 1
        self.memory[address] = value & mask
        self.memory[address + 1] = (value >> self.width) & mask

    def step(self):
        if self.halted:
            return
        base = self.pc * INSTRUCTION_WORDS
        if not self._word_range(base, INSTRUCTION_WORDS):
            return self._halt(HaltCode.BUS_ERROR)
        op, a, b, c, imm = decode(self._load64(base))
        r = self.regs
        next_pc = (self.pc + 1) & MASK32
        self.steps += 1
        try:
            op = Opcode(op)
        except ValueError:
            return self._halt(HaltCode.ILLEGAL_INSTRUCTION)
        ra, rb, rc = a & (REGISTERS - 1), b & (REGISTERS - 1), c & (REGISTERS - 1)
        if op is Opcode.NOP:
            pass
        elif op is Opcode.HALT:
            return self._halt(imm)
        elif op is Opcode.LI:
            r[ra] = imm
        elif op is Opcode.ADD:
            r[ra] = (r[rb] + r[rc]) & MASK32
        elif op is Opcode.ADDI:
            r[ra] = (r[rb] + imm) & MASK32
        elif op is Opcode.SUB:
            r[ra] = (r[rb] - r[rc]) & MASK32
        elif op is Opcode.AND:
            r[ra] = r[rb] & r[rc]
        elif op is Opcode.OR:
            r[ra] = r[rb] | r[rc]
        elif op is Opcode.SHR:
            r[ra] = r[rb] >> (imm & 31)
        elif op is Opcode.SHL:
            r[ra] = (r[rb] << (imm & 31)) & MASK32
        elif op in (Opcode.LD, Opcode.ST):
            address = (r[rb] + imm) & MASK32
            if address & 1:
                return self._halt(HaltCode.MISALIGNED)
            if not self._word_range(address, 2):
                return self._halt(HaltCode.BUS_ERROR)
            if op is Opcode.LD:
                r[ra] = self._load32(address)
            else:
                self._store32(address, r[ra])
        elif op is Opcode.CFGW:
            self.config.write(imm & 0xFFFFF, r[ra])
        elif op is Opcode.CFGWT:
            return self._table(ra, next_pc)
        elif op is Opcode.CFGWI:
            self.config.write((a | b << 8 | c << 16) & 0xFFFFF, imm)
        elif op is Opcode.CFGR:
            r[ra] = self.config.read(imm & 0xFFFFF)
        elif op is Opcode.WAIT:
            for _ in range(self.wait_limit):
                if self.config.read(imm & 0xFFFFF) & a == b:
                    break
            else:
                raise RuntimeError(f"wait at instruction {self.pc}: configuration address "
                                   f"{imm & 0xFFFFF:#x} never matched mask {a:#x} value {b:#x}")
        elif op in (Opcode.BEQ, Opcode.BNE, Opcode.BLT):
            x, y = r[ra], r[rb]
            sx, sy = x - ((x >> 31) << 32), y - ((y >> 31) << 32)
            taken = {Opcode.BEQ: x == y, Opcode.BNE: x != y, Opcode.BLT: sx < sy}[op]
            if taken:
                next_pc = imm
        elif op is Opcode.JMP:
            next_pc = imm
        elif op is Opcode.CYCLES:
            r[ra] = self.steps & MASK32
        self.pc = next_pc

    def _table(self, ra, next_pc):
        """``cfgwt``: the configuration writes of the table at ``regs[ra]``."""
        address = self.regs[ra]
        while True:
            if address % TABLE_ENTRY_WORDS:
                return self._halt(HaltCode.MISALIGNED)
            if not self._word_range(address, TABLE_ENTRY_WORDS):
                return self._halt(HaltCode.BUS_ERROR)
            target, value, last, skip = table_fields(self._load64(address))
            address += TABLE_ENTRY_WORDS
            if not skip:
                self.config.write(target, value)
            if last:
                break
        self.regs[ra] = address & MASK32
        self.pc = next_pc

    def run(self, max_steps=10_000_000):
        """Run to halt; return the halt code.  ``RuntimeError`` if it does not halt."""
        for _ in range(max_steps):
            if self.halted:
                return self.halt_code
            self.step()
        if self.halted:
            return self.halt_code
        raise RuntimeError(f"program did not halt within {max_steps} instructions (pc {self.pc})")
