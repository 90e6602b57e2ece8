"""The control CPU's instruction set: the one home of its encoding.

NeuFlow's control CPU used 64-bit instructions (an 8-bit opcode, three 8-bit
arguments, one 32-bit argument) and 16 registers; so does this one.  Bits
63..56 hold the opcode, 55..48 ``a``, 47..40 ``b``, 39..32 ``c``, 31..0
``imm``.  Registers are 32 bits; ``r0`` is an ordinary register.  A register
operand uses the low 4 bits of its field.

Memory is an array of data words (the stream word, 16 bits by default),
addressed in words.  Instruction ``n`` of a program occupies words
``4n .. 4n+3`` (little-endian: bits 15..0 first), so the program counter
counts instructions.  ``ld``/``st`` move 32-bit values as two words,
little-endian, at an even address.

``docs/isa.md`` is the prose version of the table in :data:`INSTRUCTIONS`.
"""

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Shape, unsigned
from amaranth.lib import data, enum

from .regs import pack_bits, unpack_bits

__all__ = ["Opcode", "HaltCode", "INSTRUCTION", "INSTRUCTIONS", "Form", "encode", "decode",
           "REGISTERS", "INSTRUCTION_WORDS", "TABLE_ENTRY", "TABLE_ENTRY_WORDS", "table_entry",
           "table_fields"]

REGISTERS = 16
INSTRUCTION_WORDS = 4       #: 16-bit memory words per instruction


class Opcode(enum.Enum, shape=8):
    NOP = 0x00
    HALT = 0x01
    LI = 0x02
    ADD = 0x03
    ADDI = 0x04
    SUB = 0x05
    AND = 0x06
    OR = 0x07
    SHR = 0x08
    SHL = 0x09
    LD = 0x0A
    ST = 0x0B
    CFGW = 0x0C
    CFGWI = 0x0D
    CFGR = 0x0E
    WAIT = 0x0F
    BEQ = 0x10
    BNE = 0x11
    BLT = 0x12
    JMP = 0x13
    CYCLES = 0x14
    CFGWT = 0x15


class HaltCode(enum.IntEnum):
    """Halt codes the CPU produces itself (a program's ``halt`` gives its own)."""
    ILLEGAL_INSTRUCTION = 0xFFFF_FF01   #: an opcode not in the table
    MISALIGNED = 0xFFFF_FF02            #: ld/st at an odd word address, cfgwt off an entry boundary
    BUS_ERROR = 0xFFFF_FF03             #: fetch, ld, st or a cfgwt entry outside memory


INSTRUCTION = data.StructLayout({
    "imm": unsigned(32),
    "c": unsigned(8),
    "b": unsigned(8),
    "a": unsigned(8),
    "op": Opcode,
})


@dataclass(frozen=True)
class Form:
    """How an instruction is written: its operands, and what it does."""
    operands: tuple          #: each "ra", "rb", "rc", "imm", "label", "mem" (imm(rb)), "addr24", "mask", "value"
    semantics: str


INSTRUCTIONS = {
    Opcode.NOP:    Form((), "nothing"),
    Opcode.HALT:   Form(("imm",), "stop; the halt code is imm"),
    Opcode.LI:     Form(("ra", "imm"), "ra = imm"),
    Opcode.ADD:    Form(("ra", "rb", "rc"), "ra = rb + rc (mod 2**32)"),
    Opcode.ADDI:   Form(("ra", "rb", "imm"), "ra = rb + imm (mod 2**32)"),
    Opcode.SUB:    Form(("ra", "rb", "rc"), "ra = rb - rc (mod 2**32)"),
    Opcode.AND:    Form(("ra", "rb", "rc"), "ra = rb & rc"),
    Opcode.OR:     Form(("ra", "rb", "rc"), "ra = rb | rc"),
    Opcode.SHR:    Form(("ra", "rb", "imm"), "ra = rb >> (imm & 31), logical"),
    Opcode.SHL:    Form(("ra", "rb", "imm"), "ra = rb << (imm & 31) (mod 2**32)"),
    Opcode.LD:     Form(("ra", "mem"), "ra = 32-bit value at word address rb + imm (even)"),
    Opcode.ST:     Form(("ra", "mem"), "32-bit value at word address rb + imm (even) = ra"),
    Opcode.CFGW:   Form(("ra", "imm"), "configuration write: address imm (20 bits), data ra"),
    Opcode.CFGWI:  Form(("addr24", "imm"), "configuration write: address a | b << 8 | c << 16, data imm"),
    Opcode.CFGR:   Form(("ra", "imm"), "ra = configuration read of address imm"),
    Opcode.WAIT:   Form(("mask", "value", "imm"),
                        "read configuration address imm until (data & mask) == value (8-bit mask, value)"),
    Opcode.BEQ:    Form(("ra", "rb", "label"), "if ra == rb: go to instruction imm"),
    Opcode.BNE:    Form(("ra", "rb", "label"), "if ra != rb: go to instruction imm"),
    Opcode.BLT:    Form(("ra", "rb", "label"), "if ra < rb (signed): go to instruction imm"),
    Opcode.JMP:    Form(("label",), "go to instruction imm"),
    Opcode.CYCLES: Form(("ra",), "ra = clock cycles since reset (low 32 bits)"),
    Opcode.CFGWT:  Form(("ra",), "configuration writes from the table at word address ra (a multiple "
                        "of 4): each entry's value to its address unless it is marked skip, up to the "
                        "entry marked last; then ra = the address after that entry"),
}
assert set(INSTRUCTIONS) == set(Opcode)


#: One entry of a ``cfgwt`` table: 4 words, little-endian, like an instruction
#: (so a beat holds it whole).
TABLE_ENTRY = data.StructLayout({
    "address": unsigned(20),        # configuration address
    "reserved": unsigned(10),
    "skip": unsigned(1),            # write nothing (an empty table is one skip entry)
    "last": unsigned(1),            # the table's last entry
    "value": unsigned(32),
})
TABLE_ENTRY_WORDS = INSTRUCTION_WORDS


#: Bit offsets of :data:`TABLE_ENTRY`'s fields (the compiler writes millions of entries).
_ENTRY_AT = {name: TABLE_ENTRY[name].offset for name in ("address", "value", "last", "skip")}
_ENTRY_ADDRESSES = 1 << Shape.cast(TABLE_ENTRY["address"].shape).width


def table_entry(address, value, *, last=False, skip=False):
    """One ``cfgwt`` table entry as a 64-bit integer (``ValueError`` if the
    address does not fit its field): ``TABLE_ENTRY``'s bits, shifted into place."""
    if not 0 <= address < _ENTRY_ADDRESSES:
        pack_bits(TABLE_ENTRY, {"address": address})        # raises, naming the field
    return (address << _ENTRY_AT["address"] | (value & 0xFFFF_FFFF) << _ENTRY_AT["value"] |
            bool(last) << _ENTRY_AT["last"] | bool(skip) << _ENTRY_AT["skip"])


def table_entries(addresses, values, last, skip):
    """:func:`table_entry` of whole arrays at once (``uint64``; ``ValueError``
    if an address does not fit its field)."""
    addresses = np.asarray(addresses, dtype=np.int64)
    bad = (addresses < 0) | (addresses >= _ENTRY_ADDRESSES)
    if bad.any():
        table_entry(int(addresses[bad][0]), 0)                 # raises, naming the field
    at = {name: np.uint64(offset) for name, offset in _ENTRY_AT.items()}
    return (addresses.astype(np.uint64) << at["address"] |
            (np.asarray(values, dtype=np.int64) & 0xFFFF_FFFF).astype(np.uint64) << at["value"] |
            np.asarray(last, dtype=np.uint64) << at["last"] | np.asarray(skip, dtype=np.uint64) << at["skip"])


def table_fields(entry):
    """``(address, value, last, skip)`` of a 64-bit ``cfgwt`` table entry."""
    f = unpack_bits(TABLE_ENTRY, entry)
    return f["address"], f["value"], bool(f["last"]), bool(f["skip"])


def encode(op, a=0, b=0, c=0, imm=0):
    """One instruction as a 64-bit integer."""
    for name, value, bits in (("a", a, 8), ("b", b, 8), ("c", c, 8)):
        if not 0 <= value < (1 << bits):
            raise ValueError(f"{Opcode(op).name.lower()}: field {name} = {value} does not fit {bits} bits")
    if not -(1 << 31) <= imm < (1 << 32):
        raise ValueError(f"{Opcode(op).name.lower()}: immediate {imm} does not fit 32 bits")
    return (Opcode(op).value << 56) | (a << 48) | (b << 40) | (c << 32) | (imm & 0xFFFF_FFFF)


def decode(word):
    """(opcode value, a, b, c, imm) of a 64-bit instruction; the opcode may be illegal."""
    return ((word >> 56) & 0xFF, (word >> 48) & 0xFF, (word >> 40) & 0xFF, (word >> 32) & 0xFF,
            word & 0xFFFF_FFFF)
