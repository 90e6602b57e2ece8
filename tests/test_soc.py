"""The whole processor on Verilator: programs from a memory image to halt."""

import numpy as np
import pytest

from cases import DATA, random_program
from neuflow_hdl.isa import HaltCode, Opcode, encode
from neuflow_hdl.presets import preset
from neuflow_hdl.regs import PORT_STATUS_REG, stream_port_writes, streamer_address
from sim.golden.asm import assemble, to_words
from sim.golden.iss import ISS
from sim.rtl.pipeline_program import three_layer_pipeline
from sim.rtl.runner import run_image, soc_build

pytestmark = [pytest.mark.verilator, pytest.mark.xdist_group("verilator-soc")]


@pytest.fixture(scope="session")
def tiny():
    soc_build("tiny")
    return preset("tiny")


def signed(words):
    return np.where(words >= 1 << 15, words - (1 << 16), words)


def test_three_layer_pipeline_bit_exact(tiny):
    rng = np.random.default_rng(7)
    job = three_layer_pipeline(tiny, rng)
    for latency, jitter in ((1, 0), (4, 6)):
        result = run_image(job.image, "tiny", latency=latency, jitter=jitter)
        assert result.halted and result.halt_code == 0
        got = signed(result.memory[job.output:job.output + job.expected.size])
        np.testing.assert_array_equal(got.reshape(job.expected.shape), job.expected)
        start, end = (int(result.memory[job.times + n]) | int(result.memory[job.times + n + 1]) << 16
                      for n in (0, 2))
        assert 0 < start < end <= result.cycles
        # Nothing outside the output area changed but the two recorded times.
        changed = np.flatnonzero(result.memory[:len(job.image)] != job.image)
        allowed = set(range(job.output, job.output + job.expected.size)) | set(range(job.times, job.times + 4))
        assert set(changed.tolist()) <= allowed


def test_random_programs_match_the_iss(tiny):
    """Register and memory state after random programs (no configuration
    instructions: those would drive the grid) equal the ISS's."""
    rng = np.random.default_rng(11)
    for _ in range(3):
        source = "\n".join(line for line in random_program(rng, 80).splitlines()
                           if not line.split() or line.split()[0] not in ("cfgw", "cfgwi", "cfgr", "wait"))
        program = assemble(source)
        image = np.zeros(DATA + 0x400, dtype=np.int64)
        image[:len(program) * 4] = to_words(program)
        image[DATA:DATA + 128] = rng.integers(0, 1 << 16, 128)
        iss = ISS(np.concatenate([image, np.zeros(tiny.memory_words - len(image), np.int64)]))
        want = iss.run()
        result = run_image(image, "tiny", latency=3, jitter=3)
        assert result.halt_code == want
        # The run returns memory up to the highest word written; every word above is zero.
        np.testing.assert_array_equal(result.memory, iss.memory[:len(result.memory)])
        assert not iss.memory[len(result.memory):].any()


def test_out_of_window_descriptor_and_illegal_instruction(tiny):
    rng = np.random.default_rng(3)
    status = streamer_address(0, PORT_STATUS_REG)
    bad = stream_port_writes(0, base=0x3000, width=16, height=4, stride=16, write=True, line=0,
                             window_base=0x3000, window_size=63)
    source = "\n".join([f"    cfgwi {a:#07x}, {d:#x}" for a, d in bad] + [
        f"    wait 0x04, 0x04, {status:#07x}",       # error bit
        f"    cfgr r3, {status:#07x}",
        "    st r3, 0x2000(r0)",
        "    halt 5"])
    image = np.zeros(0x3100, dtype=np.int64)
    program = to_words(assemble(source))
    image[:len(program)] = program
    image[0x3000:0x3100] = rng.integers(0, 1 << 16, 0x100)
    result = run_image(image, "tiny")
    assert result.halt_code == 5
    assert result.memory[0x2000] & 0b111 == 0b100          # error, not busy, not done
    np.testing.assert_array_equal(result.memory[0x3000:0x3100], image[0x3000:0x3100])

    illegal = np.zeros(64, dtype=np.int64)
    illegal[:8] = to_words([encode(Opcode.NOP), 0xEE << 56])
    result = run_image(illegal, "tiny")
    assert result.halt_code == HaltCode.ILLEGAL_INSTRUCTION


def test_cli_assembles_and_runs_an_image(tiny, tmp_path):
    import subprocess
    import sys
    source = tmp_path / "prog.s"
    source.write_text("    li r1, 0x1234\n    st r1, 100(r0)\n    halt 3\n")
    neuflow = [sys.executable, "-m", "sim.app.cli"]
    done = subprocess.run(neuflow + ["asm", str(source), "-o", str(tmp_path / "prog.hex"), "--listing"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "st     r1, 100(r0)" in done.stdout
    done = subprocess.run(neuflow + ["run-image", str(tmp_path / "prog.hex"), "--grid", "tiny",
                                     "--dump", str(tmp_path / "after.hex")], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr           # halt code 3 is not 0
    assert "halted with code 0x3" in done.stdout
    words = (tmp_path / "after.hex").read_text().split()
    assert int(words[100], 16) == 0x1234
    source.write_text("    li r1\n")
    done = subprocess.run(neuflow + ["asm", str(source), "-o", str(tmp_path / "bad.hex")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "line 1" in done.stderr


def test_trace_writes_an_fst_waveform(tmp_path):
    """run_image(trace=...) builds the traced top once (with liblz4 built from
    PyPI sources for the FST writer) and writes an FST file."""
    program = to_words(assemble("    li r1, 7\n    st r1, 64(r0)\n    halt 0\n"))
    image = np.zeros(128, dtype=np.int64)
    image[:len(program)] = program
    with pytest.raises(ValueError, match="FST"):
        run_image(image, "tiny", trace=tmp_path / "run.vcd")
    trace = tmp_path / "run.fst"
    result = run_image(image, "tiny", trace=trace)
    assert result.halt_code == 0 and result.memory[64] == 7
    data = trace.read_bytes()
    assert len(data) > 1000 and data[0] == 0        # an FST file starts with its header block (type 0)
