"""Assembler and disassembler for the control CPU (:mod:`neuflow_hdl.isa`).

Syntax, one instruction per line::

    ; comments start with ';' or '#'
    loop:                       ; a label names the next instruction
        li    r1, 0x100
        addi  r2, r1, -4
        ld    r3, 8(r2)         ; imm(rb)
        cfgwi 0x01402, 1234     ; configuration address (20 bits), data
        wait  0x01, 0x00, 0x00001   ; mask, value, configuration address
        bne   r1, r2, loop
        halt  0

Numbers are decimal or 0x-hexadecimal, optionally negative; any immediate may
be a label.  Errors raise :class:`AsmError` naming the line.
"""

import re

import numpy as np

from neuflow_hdl.isa import INSTRUCTION_WORDS, INSTRUCTIONS, REGISTERS, Opcode, decode, encode

__all__ = ["AsmError", "assemble", "symbols", "disassemble", "to_words", "from_words"]


class AsmError(ValueError):
    pass


_MNEMONICS = {op.name.lower(): op for op in Opcode}


def _number(text, labels, where):
    text = text.strip()
    if text in labels:
        return labels[text]
    try:
        return int(text, 0)
    except ValueError:
        raise AsmError(f"{where}: {text!r} is neither a number nor a label") from None


def _register(text, where):
    m = re.fullmatch(r"r(\d+)", text.strip().lower())
    if not m or int(m.group(1)) >= REGISTERS:
        raise AsmError(f"{where}: {text.strip()!r} is not a register (r0 .. r{REGISTERS - 1})")
    return int(m.group(1))


def _parse(source):
    """``(lines, labels)``: the instruction lines ``(number, raw, text)`` and
    each label's instruction index."""
    lines = []
    labels = {}
    for number, raw in enumerate(source.splitlines(), 1):
        text = re.split(r"[;#]", raw, maxsplit=1)[0].strip()
        while (m := re.match(r"([A-Za-z_][\w.]*)\s*:(.*)", text)):
            name = m.group(1)
            if name in labels:
                raise AsmError(f"line {number}: label {name!r} defined twice")
            labels[name] = len(lines)
            text = m.group(2).strip()
        if text:
            lines.append((number, raw.strip(), text))
    return lines, labels


def symbols(source):
    """Each label of ``source`` and the index of the instruction it names."""
    return _parse(source)[1]


def assemble(source):
    """Assembly text to a list of 64-bit instruction words."""
    lines, labels = _parse(source)
    program = []
    for number, raw, text in lines:
        where = f"line {number} ({raw!r})"
        mnemonic, _, rest = text.partition(" ")
        op = _MNEMONICS.get(mnemonic.lower())
        if op is None:
            raise AsmError(f"{where}: unknown instruction {mnemonic!r}")
        args = [a for a in (x.strip() for x in rest.split(",")) if a] if rest.strip() else []
        form = INSTRUCTIONS[op].operands
        if len(args) != len(form):
            raise AsmError(f"{where}: {mnemonic} takes {len(form)} operand(s) "
                           f"({', '.join(form) or 'none'}), not {len(args)}")
        fields = {"a": 0, "b": 0, "c": 0, "imm": 0}
        regs = iter("abc")
        for kind, arg in zip(form, args):
            if kind in ("ra", "rb", "rc"):
                fields[kind[1]] = _register(arg, where)
                next(regs)
            elif kind in ("imm", "label"):
                fields["imm"] = _number(arg, labels, where)
            elif kind == "mem":
                m = re.fullmatch(r"(.*)\((.*)\)", arg)
                if not m:
                    raise AsmError(f"{where}: expected imm(rb), not {arg!r}")
                fields["imm"] = _number(m.group(1) or "0", labels, where)
                fields["b"] = _register(m.group(2), where)
            elif kind == "addr24":
                address = _number(arg, labels, where)
                if not 0 <= address < (1 << 24):
                    raise AsmError(f"{where}: configuration address {address:#x} does not fit 24 bits")
                fields.update(a=address & 0xFF, b=(address >> 8) & 0xFF, c=(address >> 16) & 0xFF)
            elif kind in ("mask", "value"):
                value = _number(arg, labels, where)
                if not 0 <= value < 256:
                    raise AsmError(f"{where}: {kind} {value} does not fit 8 bits")
                fields["a" if kind == "mask" else "b"] = value
        try:
            program.append(encode(op, **fields))
        except ValueError as exc:
            raise AsmError(f"{where}: {exc}") from None
    return program


def disassemble(word):
    """One 64-bit instruction to text (``.illegal`` for an unknown opcode)."""
    op, a, b, c, imm = decode(word)
    try:
        op = Opcode(op)
    except ValueError:
        return f".illegal {word:#018x}"
    simm = imm - (1 << 32) if imm >> 31 else imm
    parts = []
    for kind in INSTRUCTIONS[op].operands:
        parts.append({
            "ra": f"r{a}", "rb": f"r{b}", "rc": f"r{c}", "imm": str(simm), "label": str(imm),
            "mem": f"{simm}(r{b})", "addr24": f"{a | b << 8 | c << 16:#07x}",
            "mask": f"{a:#04x}", "value": f"{b:#04x}",
        }[kind])
    return f"{op.name.lower():<6} {', '.join(parts)}".rstrip()


def to_words(program, width=16):
    """Instructions to memory words (4 per instruction, little-endian)."""
    mask = (1 << width) - 1
    return np.array([(ins >> (width * n)) & mask for ins in program
                     for n in range(INSTRUCTION_WORDS)], dtype=np.int64)


def from_words(words, width=16):
    words = [int(w) & ((1 << width) - 1) for w in words]
    return [sum(words[i + n] << (width * n) for n in range(INSTRUCTION_WORDS))
            for i in range(0, len(words) - INSTRUCTION_WORDS + 1, INSTRUCTION_WORDS)]
