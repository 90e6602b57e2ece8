"""The host link: the board's side of the serial protocol of ``docs/hostlink.md``.

One home for the protocol: the frame bytes, command and reply codes, the
checksum, the payload sizes and the board's run states are defined here and
used by the gateware (:class:`HostLink`) and by the host's client
(``boards.link``).

A command frame is ``SYNC_COMMAND, command, length (2 bytes), payload,
checksum (2 bytes)``; its reply is ``SYNC_REPLY, command, reply code, length
(2 bytes), payload, checksum (2 bytes)``.  Multi-byte fields and memory words
are little-endian; the checksum is CRC-16/CCITT (polynomial 0x1021, initial
value 0xFFFF, as ``binascii.crc_hqx(data, 0xFFFF)``) of every byte after the
sync byte and before the checksum.
"""

import binascii
import enum
import zlib
from dataclasses import replace
from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .membus import memory_bus

__all__ = ["SYNC_COMMAND", "SYNC_REPLY", "MAX_WORDS", "STATUS_BYTES", "TIMEOUT_SECONDS", "Command", "Reply",
           "RunState", "crc16", "identity", "HostLink"]

SYNC_COMMAND = 0xA5
SYNC_REPLY = 0x5A
#: Words one WRITE carries or one READ returns.
MAX_WORDS = 256
#: A STATUS reply's payload: run state (1 byte), halt code, cycles, memory words, identity (4 bytes each).
STATUS_BYTES = 17
#: A frame whose next byte does not come within this many seconds is abandoned
#: and answered with TIMEOUT (USB serial adapters hold bytes for up to 16 ms).
TIMEOUT_SECONDS = 0.1


class Command(enum.IntEnum):
    STATUS = 0x01       #: -> run state, halt code, cycles, memory words, identity
    WRITE = 0x02        #: address (4 bytes), 1..MAX_WORDS words -> nothing
    READ = 0x03         #: address (4 bytes), count (2 bytes) -> count words
    START = 0x04        #: reset the processor and run it from address 0
    STOP = 0x05         #: hold the processor in reset (abandons a run)


class Reply(enum.IntEnum):
    OK = 0x00
    BAD_CHECKSUM = 0x01     #: the frame's checksum is wrong: nothing done
    BAD_COMMAND = 0x02      #: no such command
    BAD_LENGTH = 0x03       #: the payload's length does not suit the command
    BUSY = 0x04             #: the processor is running: memory and START refused
    OUT_OF_RANGE = 0x05     #: the words lie (partly) outside the memory
    TIMEOUT = 0x06          #: the frame stopped arriving before its end


class RunState(enum.IntEnum):
    IDLE = 0            #: held in reset, never run since power-on or STOP
    RUNNING = 1
    HALTED = 2          #: halted with code 0
    FAULT = 3           #: halted with any other code


def crc16(data, crc=0xFFFF):
    """The frame checksum of the bytes ``data``."""
    return binascii.crc_hqx(bytes(data), crc)


def identity(config):
    """A 32-bit fingerprint of the grid ``config`` apart from its memory size and
    clock: the board reports it, the host refuses a network compiled for another grid."""
    return zlib.crc32(repr(replace(config, memory_words=0, clock_mhz=0.0)).encode())


def _crc16_terms():
    """For each bit of the CRC register after a byte, the bits it is the XOR
    of: ``("crc", n)`` or ``("byte", n)`` (the CRC is linear over GF(2))."""
    register = [{("crc", n)} for n in range(16)]
    for n in range(8):
        register[8 + n] = register[8 + n] ^ {("byte", n)}
    for _ in range(8):
        top = register[15]
        register = [set()] + register[:15]
        for n in range(16):
            if (0x1021 >> n) & 1:
                register[n] = register[n] ^ top
    return [sorted(bits) for bits in register]


_CRC16_TERMS = _crc16_terms()


def _crc16_byte(crc, byte):
    """The CRC-16/CCITT register after ``byte``, as an Amaranth expression."""
    sources = {"crc": crc, "byte": byte}
    bits = []
    for terms in _CRC16_TERMS:
        bit = Const(0, 1)
        for source, n in terms:
            bit = bit ^ sources[source][n]
        bits.append(bit)
    return Cat(*bits)


class HostLink(wiring.Component):
    """Receives command frames, acts on the memory and the processor, sends replies.

    The link owns the memory bus while the processor is not running
    (``running`` low): a WRITE lands only once its whole frame has arrived
    with a good checksum; while running, memory commands and START are
    answered BUSY.  Bytes arriving while a reply is being sent are dropped
    (the host waits for each reply).

    Parameters
    ----------
    config : GridConfig
        The processor's grid (its memory size, bus beat and identity).
    timeout : int
        Clock cycles a frame may pause between two bytes before it is
        abandoned (:data:`TIMEOUT_SECONDS` at the board's clock).
    addr_width : int
        Beat-address bits of the memory bus.

    Members
    -------
    rx : In(stream.Signature(8))       bytes from the UART receiver
    tx : Out(stream.Signature(8))      bytes to the UART transmitter
    bus : Out(memory_bus(...))         the memory, used only while not running
    running : In(1)                    the processor runs
    state : In(2)                      the :class:`RunState`
    halt_code, cycles : In(32)         of the last run
    start, stop : Out(1)               one-cycle requests to the run control
    """

    def __init__(self, config, *, timeout, addr_width):
        if not isinstance(timeout, int) or timeout < 1:
            raise ValueError(f"the frame timeout must be a whole number of cycles, not {timeout!r}")
        if config.fmt.width != 16:
            raise ValueError(f"the host link carries 16-bit memory words, not {config.fmt.width}-bit ones")
        self._config = config
        self._timeout = timeout
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "bus": Out(memory_bus(addr_width=addr_width, beat_words=config.beat_words, width=config.fmt.width)),
            "running": In(1),
            "state": In(2),
            "halt_code": In(32),
            "cycles": In(32),
            "start": Out(1),
            "stop": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        B, width = c.beat_words, c.fmt.width
        lane_bits = B.bit_length() - 1
        m.submodules.buffer = buffer = memory.Memory(shape=16, depth=MAX_WORDS, init=[])
        rport = buffer.read_port(transparent_for=())
        frame = SimpleNamespace(
            command=Signal(8), length=Signal(16),
            index=Signal(16),           # payload bytes received; then words written or bytes sent
            header=Signal(48),          # the payload's first six bytes: address, count
            low=Signal(8),              # a word's first byte
            crc=Signal(16), received_crc=Signal(16), wport=buffer.write_port(),
            fits=Signal(), count=Signal(16))
        address = Signal(32)
        m.d.comb += [address.eq(frame.header[:32]), frame.count.eq(frame.header[32:])]
        words = Mux(frame.command == Command.WRITE, (frame.length - 4) >> 1, frame.count)
        m.d.comb += frame.fits.eq(address + words <= c.memory_words)
        reply, out_length, word = Signal(8), Signal(16), Signal(16)
        status = Signal(8 * STATUS_BYTES)
        m.d.comb += status.eq(Cat(self.state, Const(0, 6), self.halt_code, self.cycles,
                                  Const(c.memory_words, 32), Const(identity(c), 32)))

        limit = self._timeout
        timeout = Signal(range(limit + 1))
        in_frame = Signal()
        byte, got = self.rx.payload, self.rx.valid
        m.d.comb += self.rx.ready.eq(1)
        with m.If(got):
            m.d.sync += timeout.eq(0)
        with m.Elif(in_frame):
            m.d.sync += timeout.eq(timeout + 1)

        def answer(code, payload_length=0):
            m.d.sync += [reply.eq(code), out_length.eq(payload_length), frame.index.eq(0), frame.crc.eq(0xFFFF)]
            m.next = "SEND_SYNC"

        def send(value, then, fold=True):
            """Offer ``value`` to the transmitter; once taken, fold it into the checksum and go to ``then``."""
            m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(value)]
            with m.If(self.tx.ready):
                if fold:
                    m.d.sync += frame.crc.eq(_crc16_byte(frame.crc, value))
                m.next = then

        def send_and_count(value):
            with m.If(self.tx.ready):
                m.d.sync += frame.index.eq(frame.index + 1)
            send(value, "SEND_PAYLOAD")

        bus = self.bus.cmd
        with m.FSM():
            with m.State("SYNC"):
                with m.If(got & (byte == SYNC_COMMAND)):
                    m.d.sync += [frame.crc.eq(0xFFFF), frame.header.eq(0)]
                    m.next = "COMMAND"
            for name in ("COMMAND", "LENGTH_0", "LENGTH_1", "PAYLOAD", "CHECK_0", "CHECK_1"):
                with m.State(name):
                    m.d.comb += in_frame.eq(1)
                    with m.If(got):
                        self._receive(m, name, byte, frame.crc.eq(_crc16_byte(frame.crc, byte)), frame)
                    with m.Elif(timeout == limit):
                        answer(Reply.TIMEOUT)
            with m.State("DECODE"):
                self._decode(m, answer, frame)
            with m.State("WRITE"):
                m.d.comb += [rport.addr.eq(frame.index), rport.en.eq(1)]
                m.next = "WRITE_WORD"
            with m.State("WRITE_WORD"):
                at = Signal(32)
                m.d.comb += [at.eq(address + frame.index), bus.valid.eq(1),
                             bus.payload.addr.eq(at >> lane_bits), bus.payload.we.eq(1),
                             bus.payload.wdata.eq(Cat(*[rport.data.as_unsigned()[:width]] * B)),
                             bus.payload.wmask.eq(1 << at[:lane_bits] if lane_bits else 1)]
                with m.If(bus.ready):
                    m.d.sync += frame.index.eq(frame.index + 1)
                    with m.If(frame.index + 1 == (frame.length - 4) >> 1):
                        answer(Reply.OK)
                    with m.Else():
                        m.next = "WRITE"
            with m.State("SEND_SYNC"):
                send(SYNC_REPLY, "SEND_COMMAND", fold=False)
            with m.State("SEND_COMMAND"):
                send(frame.command, "SEND_REPLY")
            with m.State("SEND_REPLY"):
                send(reply, "SEND_LENGTH_0")
            with m.State("SEND_LENGTH_0"):
                send(out_length[:8], "SEND_LENGTH_1")
            with m.State("SEND_LENGTH_1"):
                send(out_length[8:], "SEND_PAYLOAD")
            with m.State("SEND_PAYLOAD"):
                with m.If(frame.index == out_length):
                    m.next = "SEND_CHECK_0"
                with m.Elif(frame.command == Command.STATUS):
                    send_and_count(status.word_select(frame.index[:5], 8))
                with m.Elif(frame.index[0]):
                    send_and_count(word[8:])
                with m.Else():
                    m.next = "READ"
            lane = Signal(max(lane_bits, 1))
            with m.State("READ"):
                at = Signal(32)
                m.d.comb += [at.eq(address + (frame.index >> 1)), bus.valid.eq(1),
                             bus.payload.addr.eq(at >> lane_bits)]
                with m.If(bus.ready):
                    m.d.sync += lane.eq(at[:lane_bits] if lane_bits else 0)
                    m.next = "READ_WAIT"
            with m.State("READ_WAIT"):
                m.d.comb += self.bus.resp.ready.eq(1)
                with m.If(self.bus.resp.valid):
                    m.d.sync += word.eq(self.bus.resp.payload.word_select(lane, width)[:16])
                    m.next = "SEND_LOW"
            with m.State("SEND_LOW"):
                send_and_count(word[:8])
            with m.State("SEND_CHECK_0"):
                send(frame.crc[:8], "SEND_CHECK_1", fold=False)
            with m.State("SEND_CHECK_1"):
                send(frame.crc[8:], "SYNC", fold=False)
        return m

    def _receive(self, m, name, byte, fold, frame):
        """What a receiving state does with a byte (``fold`` it into the checksum)."""
        if name == "COMMAND":
            m.d.sync += [frame.command.eq(byte), fold]
            m.next = "LENGTH_0"
        elif name == "LENGTH_0":
            m.d.sync += [frame.length[:8].eq(byte), fold]
            m.next = "LENGTH_1"
        elif name == "LENGTH_1":
            m.d.sync += [frame.length[8:].eq(byte), frame.index.eq(0), fold]
            m.next = "PAYLOAD"
            with m.If(Cat(frame.length[:8], byte) == 0):
                m.next = "CHECK_0"
        elif name == "PAYLOAD":
            # Bytes 0-5 are the header (address, count); from byte 4 on, pairs are a WRITE's words.
            index = frame.index
            with m.If(index < 6):
                m.d.sync += frame.header.word_select(index[:3], 8).eq(byte)
            with m.If(~index[0]):
                m.d.sync += frame.low.eq(byte)
            with m.Elif((index >= 4) & (index < 4 + 2 * MAX_WORDS)):
                m.d.comb += [frame.wport.addr.eq((index - 4) >> 1), frame.wport.data.eq(Cat(frame.low, byte)),
                             frame.wport.en.eq(1)]
            m.d.sync += [index.eq(index + 1), fold]
            with m.If(index + 1 == frame.length):
                m.next = "CHECK_0"
        elif name == "CHECK_0":
            m.d.sync += frame.received_crc[:8].eq(byte)
            m.next = "CHECK_1"
        else:
            m.d.sync += frame.received_crc[8:].eq(byte)
            m.next = "DECODE"

    def _decode(self, m, answer, frame):
        """A whole frame has arrived: act on it, or answer why not."""
        busy, command, length = self.running, frame.command, frame.length
        with m.If(frame.received_crc != frame.crc):
            answer(Reply.BAD_CHECKSUM)
        with m.Elif(command == Command.STATUS):
            with m.If(length != 0):
                answer(Reply.BAD_LENGTH)
            with m.Else():
                answer(Reply.OK, STATUS_BYTES)
        with m.Elif((command == Command.WRITE) | (command == Command.READ)):
            writing = command == Command.WRITE
            with m.If(Mux(writing, (length < 6) | length[0] | (length > 4 + 2 * MAX_WORDS),
                          (length != 6) | (frame.count == 0) | (frame.count > MAX_WORDS))):
                answer(Reply.BAD_LENGTH)
            with m.Elif(busy):
                answer(Reply.BUSY)
            with m.Elif(~frame.fits):
                answer(Reply.OUT_OF_RANGE)
            with m.Elif(writing):
                m.d.sync += frame.index.eq(0)
                m.next = "WRITE"
            with m.Else():
                answer(Reply.OK, frame.count << 1)
        with m.Elif((command == Command.START) | (command == Command.STOP)):
            with m.If(length != 0):
                answer(Reply.BAD_LENGTH)
            with m.Elif((command == Command.START) & busy):
                answer(Reply.BUSY)
            with m.Else():
                m.d.comb += [self.start.eq(command == Command.START), self.stop.eq(command == Command.STOP)]
                answer(Reply.OK)
        with m.Else():
            answer(Reply.BAD_COMMAND)
