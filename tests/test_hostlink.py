"""The UART and the host link on Amaranth's simulator.

Frames are built here from the protocol as ``docs/hostlink.md`` states it
(``struct`` and ``binascii.crc_hqx``), not with the host tool's encoder; the
memory behind the link is checked word for word against a numpy array.
"""

import binascii
import struct
from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from helpers import simulate
from neuflow_hdl.hosted import OnChipMemory
from neuflow_hdl.hostlink import MAX_WORDS, STATUS_BYTES, HostLink, identity
from neuflow_hdl.presets import preset
from neuflow_hdl.soc import beat_address_width
from neuflow_hdl.uart import UARTReceiver, UARTTransmitter

CONFIG = replace(preset("tiny"), memory_words=1 << 10)
TIMEOUT = 3000        #: cycles a frame may pause


def command_frame(command, payload=b"", *, corrupt=False):
    body = struct.pack("<BH", command, len(payload)) + payload
    crc = binascii.crc_hqx(body, 0xFFFF) ^ (0x0100 if corrupt else 0)
    return bytes([0xA5]) + body + struct.pack("<H", crc)


def parse_reply(data):
    """``(command, code, payload)`` of one reply frame; the rest of ``data``."""
    assert data[0] == 0x5A, data
    command, code, length = struct.unpack("<BBH", data[1:5])
    payload = data[5:5 + length]
    (crc,) = struct.unpack("<H", data[5 + length:7 + length])
    assert crc == binascii.crc_hqx(data[1:5 + length], 0xFFFF)
    return (command, code, payload), data[7 + length:]


def run_link(frames, *, running=0, state=0, halt_code=0, cycles=0, seed=1, gap=0.3, stall=0.3,
             pause_after=None):
    """Send ``frames`` (bytes, each waited on for its reply) into a fresh link;
    the reply bytes.  ``pause_after``: (frame, byte) after which the sender goes silent."""
    rng = np.random.default_rng(seed)
    link = HostLink(CONFIG, timeout=TIMEOUT, addr_width=beat_address_width(CONFIG))
    m = Module()
    m.submodules.link = link
    m.submodules.ram = ram = OnChipMemory(words=CONFIG.memory_words, beat_words=CONFIG.beat_words,
                                          width=16, addr_width=beat_address_width(CONFIG))
    wiring.connect(m, link.bus, ram.bus)
    replies = []
    pulses = []

    async def bench(ctx):
        ctx.set(link.running, running)
        ctx.set(link.state, state)
        ctx.set(link.halt_code, halt_code)
        ctx.set(link.cycles, cycles)
        for n, data in enumerate(frames):
            for k, byte in enumerate(data):
                for _ in range(int(rng.integers(0, 3)) if rng.random() < gap else 0):
                    await ctx.tick()
                ctx.set(link.rx.payload, byte)
                ctx.set(link.rx.valid, 1)
                await ctx.tick()
                ctx.set(link.rx.valid, 0)
                if pause_after == (n, k):
                    break
            got = bytearray()
            while True:
                ready = rng.random() >= stall
                ctx.set(link.tx.ready, ready)
                _, _, valid, byte, start, stop = await ctx.tick().sample(
                    link.tx.valid, link.tx.payload, link.start, link.stop)
                if start or stop:
                    pulses.append("start" if start else "stop")
                if valid and ready:
                    got.append(byte)
                    if len(got) >= 5 and len(got) == 7 + struct.unpack("<H", bytes(got[3:5]))[0]:
                        break
            ctx.set(link.tx.ready, 0)
            replies.append(bytes(got))

    simulate(m, bench, cycles=40_000 + 2 * TIMEOUT)
    return [parse_reply(r)[0] for r in replies], pulses


def test_uart_loopback_random_bytes():
    """Bytes through the transmitter and back through the receiver, at random gaps."""
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 40).tolist()
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(5)
    m.submodules.rx = rx = UARTReceiver(5)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def send(ctx):
        for byte in data:
            for _ in range(int(rng.integers(0, 30))):
                await ctx.tick()
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
            ctx.set(tx.i.valid, 0)

    async def receive(ctx):
        while len(got) < len(data):
            _, _, valid, byte = await ctx.tick().sample(rx.o.valid, rx.o.payload)
            if valid:
                got.append(byte)

    simulate(m, send, receive, cycles=len(data) * 100)
    assert got == data


def test_uart_bit_timing():
    """The transmitter's line: start bit, eight bits least significant first, stop bit, each 7 cycles."""
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(7)
    line = []

    async def bench(ctx):
        ctx.set(tx.i.payload, 0b1011_0010)
        ctx.set(tx.i.valid, 1)
        await ctx.tick()
        ctx.set(tx.i.valid, 0)
        for _ in range(75):
            _, _, bit = await ctx.tick().sample(tx.tx)
            line.append(bit)

    simulate(m, bench, cycles=100)
    bits = [line[7 * n + 3] for n in range(10)]
    assert bits == [0, 0, 1, 0, 0, 1, 1, 0, 1, 1]
    assert line[70:] == [1] * 5


def test_receiver_ignores_a_glitch_and_drops_a_framing_error():
    m = Module()
    m.submodules.rx = rx = UARTReceiver(8)
    got = []

    async def drive(ctx):
        def bits(byte, stop=1):
            return [0] + [(byte >> n) & 1 for n in range(8)] + [stop]
        levels = [1] * 10 + [0, 0] + [1] * 20                  # a 2-cycle glitch: not a start bit
        levels += [b for bit in bits(0x3C, stop=0) for b in [bit] * 8] + [1] * 30   # stop bit low
        levels += [b for bit in bits(0xA7) for b in [bit] * 8] + [1] * 30
        for level in levels:
            ctx.set(rx.rx, level)
            _, _, valid, byte = await ctx.tick().sample(rx.o.valid, rx.o.payload)
            if valid:
                got.append(byte)
        for _ in range(5):
            _, _, valid, byte = await ctx.tick().sample(rx.o.valid, rx.o.payload)
            if valid:
                got.append(byte)

    simulate(m, drive, cycles=1000)
    assert got == [0xA7]


def test_write_then_read_back_and_status():
    rng = np.random.default_rng(5)
    words = rng.integers(0, 1 << 16, 37)
    address = 301                       # not beat-aligned: every lane of a beat is written
    frames = [command_frame(0x02, struct.pack("<I", address) + words.astype("<u2").tobytes()),
              command_frame(0x03, struct.pack("<IH", address - 2, 41)),
              command_frame(0x01)]
    replies, pulses = run_link(frames, state=3, halt_code=0xFFFFFF03, cycles=123456)
    assert replies[0] == (0x02, 0, b"")
    command, code, payload = replies[1]
    assert (command, code) == (0x03, 0)
    got = np.frombuffer(payload, "<u2")
    np.testing.assert_array_equal(got[2:39], words)
    np.testing.assert_array_equal(got[[0, 1, 39, 40]], 0)
    command, code, payload = replies[2]
    assert (command, code, len(payload)) == (0x01, 0, STATUS_BYTES)
    assert struct.unpack("<BIIII", payload) == (3, 0xFFFFFF03, 123456, CONFIG.memory_words, identity(CONFIG))
    assert pulses == []


def test_bad_frames_are_answered_and_touch_nothing():
    words = np.arange(1, 9)
    write = struct.pack("<I", 16) + words.astype("<u2").tobytes()
    frames = [command_frame(0x02, write, corrupt=True),                          # bad checksum
              command_frame(0x7E),                                             # no such command
              command_frame(0x02, struct.pack("<I", 16) + b"\x01"),            # odd length
              command_frame(0x02, struct.pack("<I", CONFIG.memory_words - 4) + write[4:]),   # past the end
              command_frame(0x03, struct.pack("<IH", 0, MAX_WORDS + 1)),       # too many words
              command_frame(0x01, b"\x00"),                                    # STATUS with a payload
              b"\x00\x13" + command_frame(0x03, struct.pack("<IH", 12, 12))]   # junk before the sync
    replies, _ = run_link(frames)
    assert [code for _, code, _ in replies] == [1, 2, 3, 5, 3, 3, 0]
    assert np.frombuffer(replies[-1][2], "<u2").tolist() == [0] * 12


def test_busy_while_running_and_the_run_requests():
    frames = [command_frame(0x02, struct.pack("<IH", 0, 1)), command_frame(0x03, struct.pack("<IH", 0, 1)),
              command_frame(0x04), command_frame(0x05), command_frame(0x01)]
    replies, pulses = run_link(frames, running=1, state=1)
    assert [code for _, code, _ in replies] == [4, 4, 4, 0, 0]
    assert pulses == ["stop"]
    replies, pulses = run_link([command_frame(0x04)])
    assert replies[0][1] == 0 and pulses == ["start"]


def test_a_frame_cut_short_times_out_and_the_link_recovers():
    write = command_frame(0x02, struct.pack("<I", 0) + np.arange(1, 5).astype("<u2").tobytes())
    replies, _ = run_link([write, command_frame(0x03, struct.pack("<IH", 0, 4))], pause_after=(0, 8))
    assert replies[0][:2] == (0x02, 6)                          # TIMEOUT
    assert np.frombuffer(replies[1][2], "<u2").tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("seed", [11, 12])
def test_random_writes_and_reads_match_a_model(seed):
    """Random WRITE and READ frames against a numpy model of the memory."""
    rng = np.random.default_rng(seed)
    model = np.zeros(CONFIG.memory_words, np.int64)
    frames, expected = [], []
    for _ in range(6):
        count = int(rng.integers(1, 24))
        address = int(rng.integers(0, CONFIG.memory_words - count))
        if rng.random() < 0.5:
            words = rng.integers(0, 1 << 16, count)
            model[address:address + count] = words
            frames.append(command_frame(0x02, struct.pack("<I", address) + words.astype("<u2").tobytes()))
            expected.append(None)
        else:
            frames.append(command_frame(0x03, struct.pack("<IH", address, count)))
            expected.append(model[address:address + count].copy())
    replies, _ = run_link(frames, seed=seed)
    for (_, code, payload), want in zip(replies, expected):
        assert code == 0
        if want is not None:
            np.testing.assert_array_equal(np.frombuffer(payload, "<u2"), want)


def test_on_chip_memory_against_a_model_with_gaps_and_back_pressure():
    """Random masked writes and reads, random command gaps and response stalls:
    every read answers, in order, with the memory as the commands before it left it."""
    rng = np.random.default_rng(21)
    beat, words = 4, 1 << 8
    dut = OnChipMemory(words=words, beat_words=beat, width=16, addr_width=6)
    model = np.zeros(words, np.int64)
    commands, expected, got = [], [], []
    for _ in range(300):
        address = int(rng.integers(0, words // beat))
        if rng.random() < 0.5:
            data = rng.integers(0, 1 << 16, beat)
            mask = int(rng.integers(0, 1 << beat))
            for n in range(beat):
                if mask >> n & 1:
                    model[address * beat + n] = data[n]
            commands.append((address, 1, sum(int(v) << (16 * n) for n, v in enumerate(data)), mask))
        else:
            commands.append((address, 0, 0, 0))
            expected.append(model[address * beat:(address + 1) * beat].copy())

    async def issue(ctx):
        for address, we, wdata, mask in commands:
            while rng.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.bus.cmd.payload, {"addr": address, "we": we, "wdata": wdata, "wmask": mask})
            ctx.set(dut.bus.cmd.valid, 1)
            await ctx.tick().until(dut.bus.cmd.ready)
            ctx.set(dut.bus.cmd.valid, 0)

    async def answer(ctx):
        while len(got) < len(expected):
            ready = rng.random() < 0.6
            ctx.set(dut.bus.resp.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.bus.resp.valid, dut.bus.resp.payload)
            if valid and ready:
                got.append([(payload >> (16 * n)) & 0xFFFF for n in range(beat)])

    simulate(dut, issue, answer, cycles=5000)
    np.testing.assert_array_equal(np.array(got), np.array(expected))
