"""Loop rolling (compiler/rolling.py): a run of passes becomes a loop over a
configuration table, and the machine sees exactly the writes of the unrolled
code, in their order."""

import numpy as np
import pytest

from compiler import codegen
from compiler.pipeline import compile_model
from compiler.rolling import PassCode, render, roll
from neuflow_hdl.isa import table_entries, table_entry
from onnx_models import EVERY_RANGE, every_operator, save
from sim.golden.asm import assemble, to_words
from sim.golden.iss import ISS, ConfigRecorder

WAITS = (("    wait 0x01, 0x00, 0xfe009",), ("    wait 0x01, 0x00, 0xfe009", "    wait 0x01, 0x00, 0xff000"))


def _writes(rng, most):
    return tuple(f"    cfgwi {int(rng.integers(0, 1 << 20)):#07x}, {int(rng.integers(0, 1 << 32)):#x}"
                 for _ in range(int(rng.integers(0, most + 1))))


def _unit(rng, index):
    """A random pass: writes before and while streaming (sometimes none), one
    of two wait sequences, now and then a label or a poll among its serial code."""
    serial = _writes(rng, 4)
    if rng.integers(0, 8) == 0:
        serial += ("    wait 0x01, 0x00, 0xfe009",)         # a poll: rolls only beside passes with one
    if rng.integers(0, 10) == 0:
        serial = (f"point_{index}:",) + serial
    return PassCode(serial, ("; a comment",) + _writes(rng, 6), WAITS[int(rng.integers(0, 2))])


def _run(lines, tables):
    """The ISS's configuration writes for ``lines`` (then halt), with the tables placed."""
    words = to_words(assemble("\n".join(lines + ["    halt 0"]) + "\n"))
    memory = np.zeros(1 << 16, dtype=np.int64)
    memory[:len(words)] = words
    for address, table in tables:
        memory[address:address + len(table)] = table
    iss = ISS(memory, ConfigRecorder())
    assert iss.run() == 0
    return iss.config.writes


@pytest.mark.parametrize("seed", range(6))
def test_rolled_code_writes_what_the_unrolled_code_writes(seed):
    rng = np.random.default_rng(seed)
    units = [_unit(rng, n) for n in range(40)]
    tables, end = [], [0x8000]

    def place(words):
        address = end[0]
        tables.append((address, np.array(words)))
        end[0] += len(words) + 4 * int(rng.integers(0, 3))
        return address

    unrolled = [line for u in units for region in (u.serial, u.overlapped, u.waits) for line in region]
    rolled, added = roll(units, place, "loop")
    assert len(added) == len(units)
    assert any("cfgwt" in line for line in rolled) and len(rolled) < len(unrolled)
    assert _run(rolled, tables) == _run(unrolled, [])
    # Every label survives, before its run's set-up.
    labels = [line for line in unrolled if line.startswith("point_")]
    assert [line for line in rolled if line.startswith("point_")] == labels
    for label in labels:
        following = next(line for line in rolled[rolled.index(label):] if line.startswith("    "))
        assert following.strip().startswith(("li r4", "cfgwi", "wait")), following


def test_passes_with_a_poll_among_their_writes_roll():
    """Passes whose serial writes a poll splits (a weight frame streamed
    alone, then the data's descriptors) roll into a loop of two ``cfgwt`` per
    pass, the poll between them; the machine sees the unrolled code's writes."""
    rng = np.random.default_rng(7)
    frame_alone = ("    wait 0x01, 0x00, 0xfe009",)
    units = [PassCode(_writes(rng, 3) + ("; weight frame first",) + frame_alone + _writes(rng, 3),
                      _writes(rng, 5), WAITS[1]) for _ in range(12)]
    tables = []

    def place(words):
        tables.append((0x8000, np.array(words)))
        return 0x8000

    unrolled = [line for u in units for region in (u.serial, u.overlapped, u.waits) for line in region]
    rolled, added = roll(units, place, "loop")
    assert len(tables) == 1 and sum("cfgwt" in line for line in rolled) == 2, rolled
    assert _run(rolled, tables) == _run(unrolled, [])
    # Per pass: two cfgwt and the branch; each write an entry (3/4 of an
    # instruction) instead of a cfgwi; a skip entry for a group without writes.
    for n, (unit, a) in enumerate(zip(units, added)):
        poll = unit.serial.index(frame_alone[0])
        before, after = unit.serial[:poll], unit.serial[poll + 1:]
        count = lambda lines: sum(line.strip().startswith("cfgwi") for line in lines)
        groups = (count(before), count(after) + count(unit.overlapped))
        serial = 2 - 0.25 * (count(before) + count(after)) + 0.75 * groups.count(0) + (2 if n == 0 else 0)
        assert a == (serial, -0.25 * count(unit.overlapped), 1), (n, a)


def _as_writes(unit):
    """``unit`` with its ``cfgwi`` lines as ``(address, value)`` pairs (as the code generator keeps them)."""
    def convert(region):
        return tuple(tuple(int(x, 0) for x in line.strip()[len("cfgwi "):].split(","))
                     if line.strip().startswith("cfgwi ") else line for line in region)
    return PassCode(convert(unit.serial), convert(unit.overlapped), unit.waits)


def test_writes_kept_as_operands_roll_as_their_text_does():
    rng = np.random.default_rng(11)
    units = [_unit(rng, n) for n in range(30)]
    text_tables, operand_tables = [], []

    def placer(tables):
        return lambda words: tables.append(np.array(words)) or 0x8000 + 64 * len(tables)

    text, _ = roll(units, placer(text_tables), "loop")
    operands, _ = roll([_as_writes(u) if n % 2 else u for n, u in enumerate(units)],
                       placer(operand_tables), "loop")
    assert render(operands) == render(text) == "\n".join(text) + "\n"
    assert all(np.array_equal(a, b) for a, b in zip(text_tables, operand_tables, strict=True))


def test_table_entries_are_table_entry_of_each():
    rng = np.random.default_rng(12)
    addresses, values = rng.integers(0, 1 << 20, 500), rng.integers(-(1 << 31), 1 << 32, 500)
    last, skip = rng.integers(0, 2, 500).astype(bool), rng.integers(0, 2, 500).astype(bool)
    entries = table_entries(addresses, values, last, skip)
    assert [int(e) for e in entries] == [table_entry(int(a), int(v), last=bool(x), skip=bool(y))
                                         for a, v, x, y in zip(addresses, values, last, skip)]
    with pytest.raises(ValueError, match="address"):
        table_entries([1 << 20], [0], [True], [False])


def test_accept_keeps_runs_unrolled():
    rng = np.random.default_rng(9)
    units = [PassCode(_writes(rng, 3) or ("    cfgwi 0x00001, 0x1",), _writes(rng, 3), WAITS[0])
             for _ in range(10)]
    lines, added = roll(units, lambda words: 0x8000, "loop", accept=lambda start, added: False)
    assert not any("cfgwt" in line for line in lines)
    assert all(a.serial == a.overlapped == a.after == 0 for a in added)


def _every_operator(tmp_path, monkeypatch, rolled):
    """The every-operator network with every run rolled, or none."""
    monkeypatch.setattr(codegen, "ROLL_ALWAYS", 0 if rolled else 10 ** 9)
    monkeypatch.setattr(codegen, "ROLL_SLOWER", -1.0)
    return compile_model(save(every_operator(np.random.default_rng(1)), tmp_path), "tiny",
                         input_range=EVERY_RANGE, reference=False)


def test_a_network_rolled_computes_what_it_computes_unrolled(tmp_path, monkeypatch):
    """Every run rolled, or none: the reference engine's output is the same
    and the rolled program is smaller."""
    from compiler.accuracy import run_reference
    from compiler.artefacts import input_image, read_output
    rolled = _every_operator(tmp_path, monkeypatch, True)
    plain = _every_operator(tmp_path, monkeypatch, False)
    assert "cfgwt" in rolled.source and "cfgwt" not in plain.source
    assert rolled.program_words < plain.program_words
    x = np.random.default_rng(2).normal(0, 1, (2, 8, 8))
    outputs = []
    for compiled in (rolled, plain):
        manifest = compiled.manifest()
        memory = run_reference(input_image(compiled.image, manifest, x), compiled.config)
        outputs.append(read_output(memory, manifest))
    np.testing.assert_array_equal(*outputs)


def test_six_hundred_passes_cost_a_few_instructions(tmp_path):
    """The 80x60 scene-parsing network on neuflow-v6: conv3's ~590 passes are
    loops over tables; the program is a fraction of the 87,516 words it took
    unrolled."""
    import onnx
    from sim.app.bench_compiler import scene_parsing
    path = tmp_path / "scene.onnx"
    onnx.save(scene_parsing(60, 80, np.random.default_rng(2012)), path)
    compiled = compile_model(path, "neuflow-v6", reference=False)
    conv3 = compiled.layers[-1]
    assert len(conv3.passes) > 500
    assert compiled.program_words < 10_000
    body = compiled.source[compiled.source.index(f"; layer {len(compiled.layers) - 1}"):]
    assert body.count("\n    ") < 300            # instructions of the last layer


def test_the_generators_shortcuts_emit_what_a_full_comparison_emits(tmp_path, monkeypatch):
    """A tile's writes diffed against its last configuration's, and a port's
    descriptor re-addressed by its base word: the same program and image as
    comparing every register of every configuration with the shadow, each
    descriptor packed whole."""
    from neuflow_hdl.regs import stream_port_writes
    model = save(every_operator(np.random.default_rng(3)), tmp_path)
    fast = compile_model(model, "tiny", input_range=EVERY_RANGE, reference=False)

    def packed_whole(self, shape, base):
        _, port, width, height, stride, write, line, window = shape
        extra = {"window_base": window[0], "window_size": window[1]} if window else {}
        return stream_port_writes(port, base=base, width=width, height=height, stride=stride, write=write,
                                  line=line, start=False, **extra)

    monkeypatch.setattr(codegen.CodeGen, "_changed", lambda self, previous, writes: writes)
    monkeypatch.setattr(codegen.CodeGen, "_port_writes", packed_whole)
    full = compile_model(model, "tiny", input_range=EVERY_RANGE, reference=False)
    assert "cfgwt" in fast.source and fast.source == full.source
    np.testing.assert_array_equal(fast.image, full.image)
