"""Control CPU: assembler, disassembler, ISS, and the gateware against the ISS
on Amaranth's simulator (random programs, random memory latency)."""

import re

import numpy as np
import pytest

from cases import DATA, config_read_value, random_program
from helpers import memory_process, simulate
from neuflow_hdl.cpu import ControlCPU
from neuflow_hdl.isa import HaltCode, Opcode, encode
from sim.golden.asm import AsmError, assemble, disassemble, from_words, to_words
from sim.golden.iss import ISS, ConfigRecorder

WORDS = 1 << 12
BEAT = 4


def test_assembler_round_trips_through_disassembler():
    rng = np.random.default_rng(0)
    program = assemble(random_program(rng, 200))
    text = "\n".join(disassemble(word) for word in program)
    assert assemble(text) == program
    assert from_words(to_words(program)) == program


@pytest.mark.parametrize("source, message", [
    ("frob r1", "unknown instruction 'frob'"),
    ("add r1, r2", "add takes 3 operand(s)"),
    ("li r16, 1", "'r16' is not a register"),
    ("jmp nowhere", "neither a number nor a label"),
    ("x: nop\nx: nop", "label 'x' defined twice"),
    ("li r1, 0x1ffffffff", "does not fit 32 bits"),
])
def test_assembler_errors_name_the_line(source, message):
    with pytest.raises(AsmError, match=re.escape(message)) as info:
        assemble(source)
    assert "line " in str(info.value)


def test_every_opcode_is_documented():
    from pathlib import Path
    isa_doc = (Path(__file__).resolve().parent.parent / "docs" / "isa.md").read_text()
    for op in Opcode:
        assert f"`{op.name.lower()}`" in isa_doc, op
    for code in HaltCode:
        assert f"{code.value:#x}" in isa_doc.lower(), code


def image(program):
    memory = np.zeros(WORDS, dtype=np.int64)
    words = to_words(program)
    memory[:len(words)] = words
    memory[DATA:DATA + 128] = np.random.default_rng(len(program)).integers(0, 1 << 16, 128)
    return memory


def run_rtl(dut, memory, rng, max_cycles=50_000, latency=1):
    """Run ``dut`` on ``memory`` (modified in place) with configuration reads
    answered ``latency`` cycles after ``re``; return (halt code, config writes)."""
    writes = []
    state = {}
    answers = [0] * (latency - 1)   # rdata of the cycles to come

    memory_model = memory_process(dut.bus, memory, rng, BEAT)

    async def config_target(ctx):
        while True:
            _, _, we, re, addr, wdata = await ctx.tick().sample(dut.cfg.we, dut.cfg.re, dut.cfg.addr,
                                                                dut.cfg.wdata)
            if we:
                writes.append((addr.as_bits(), wdata))
            answers.append(config_read_value(addr.as_bits()) if re else 0)
            ctx.set(dut.cfg.rdata, answers.pop(0))

    async def bench(ctx):
        await ctx.tick().until(dut.halted)
        state["code"] = ctx.get(dut.halt_code)

    simulate(dut, bench, processes=[memory_model, config_target], cycles=max_cycles)
    return state["code"], writes


@pytest.fixture(scope="module")
def dut():
    return ControlCPU(memory_words=WORDS, beat_words=BEAT)


@pytest.mark.parametrize("latency", [1, 2])
def test_random_programs_match_the_iss(latency):
    dut = ControlCPU(memory_words=WORDS, beat_words=BEAT, config_latency=latency)
    rng = np.random.default_rng(5)
    for n in range(12):
        program = assemble(random_program(rng, 60))
        memory = image(program)
        iss = ISS(memory, ConfigRecorder(config_read_value))
        want_code = iss.run()
        got_code, writes = run_rtl(dut, memory, rng, latency=latency)
        assert got_code == want_code, f"program {n}"
        assert writes == iss.config.writes, f"program {n}"
        np.testing.assert_array_equal(memory, iss.memory, err_msg=f"program {n}")


@pytest.mark.parametrize("source, code", [
    ("nop\n.illegal", None),
    ("li r1, 3\nld r2, 0(r1)\nhalt 0", HaltCode.MISALIGNED),
    (f"li r1, {WORDS}\nst r2, 0(r1)\nhalt 0", HaltCode.BUS_ERROR),
    ("li r1, 6\ncfgwt r1\nhalt 0", HaltCode.MISALIGNED),
    (f"li r1, {WORDS - 4}\ncfgwt r1\nhalt 0", HaltCode.BUS_ERROR),    # no entry is marked last
    (f"jmp {WORDS // 4}", HaltCode.BUS_ERROR),
])
def test_faults_halt_with_their_codes(dut, source, code):
    if code is None:
        program = [encode(Opcode.NOP), 0xEE << 56]
        code = HaltCode.ILLEGAL_INSTRUCTION
    else:
        program = assemble(source)
    memory = image(program)
    iss = ISS(memory)
    assert iss.run() == code
    got, _ = run_rtl(dut, memory, np.random.default_rng(1))
    assert got == code
    np.testing.assert_array_equal(memory, iss.memory)
