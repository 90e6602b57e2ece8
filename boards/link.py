"""The host's side of the serial host link (``docs/hostlink.md``).

:class:`BoardLink` speaks the protocol of :mod:`neuflow_hdl.hostlink` over any
pyserial port: a device (``/dev/ttyUSB0``), or a URL such as
``socket://localhost:PORT`` (how the tests reach the board model on
Verilator).  Every failure is a :class:`LinkError` naming the port and what
went wrong: a board that does not answer, a reply that is cut short or whose
checksum is wrong, or a command the board refused (with its reply code).
"""

import struct
import time
from dataclasses import dataclass

import numpy as np

from neuflow_hdl.hostlink import (MAX_WORDS, STATUS_BYTES, SYNC_COMMAND, SYNC_REPLY, Command, Reply, RunState, crc16,
                                  identity)
from neuflow_hdl.presets import PRESETS

__all__ = ["BoardLink", "BoardStatus", "LinkError", "DEFAULT_BAUD"]

#: The ULX3S top's line rate (boards/ulx3s.py); a socket ignores it.
DEFAULT_BAUD = 1_000_000


class LinkError(RuntimeError):
    """The board could not be reached, did not answer, or refused a command."""


@dataclass(frozen=True)
class BoardStatus:
    state: RunState
    halt_code: int
    cycles: int             #: the cycle counter: now while running, at the halt after it
    memory_words: int
    identity: int           #: ``neuflow_hdl.hostlink.identity`` of the board's grid

    @property
    def grid(self):
        """The name of the grid preset the board carries, or None if no preset has its identity."""
        return next((name for name, config in PRESETS.items() if identity(config) == self.identity), None)


def _name(command):
    try:
        return Command(command).name
    except ValueError:
        return f"command {command:#04x}"


def frame(command, payload=b""):
    """The bytes of a command frame."""
    body = struct.pack("<BH", command, len(payload)) + bytes(payload)
    return bytes([SYNC_COMMAND]) + body + struct.pack("<H", crc16(body))


class BoardLink:
    """A connection to a board.  ``timeout``: seconds a reply may take to start
    arriving and to finish."""

    def __init__(self, port, *, baud=DEFAULT_BAUD, timeout=5.0):
        import serial
        self.port = port
        self.timeout = timeout
        try:
            self._serial = serial.serial_for_url(port, baudrate=baud, timeout=timeout)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise LinkError(f"{port}: cannot open ({exc})") from None

    def close(self):
        self._serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- frames ----------------------------------------------------------

    def send_raw(self, data):
        """Write bytes as they are (the tests send broken frames this way)."""
        import serial
        try:
            self._serial.write(bytes(data))
            self._serial.flush()
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"{self.port}: write failed ({exc})") from None

    def reply(self, command):
        """Read one reply to ``command``: ``(code, payload)``."""
        deadline = time.monotonic() + self.timeout
        while True:
            sync = self._read(1, deadline, command)
            if sync[0] == SYNC_REPLY:
                break
        head = self._read(4, deadline, command)
        echoed, code, length = struct.unpack("<BBH", head)
        payload = self._read(length, deadline, command)
        (check,) = struct.unpack("<H", self._read(2, deadline, command))
        if check != crc16(head + payload):
            raise LinkError(f"{self.port}: the reply to {_name(command)} has a bad checksum")
        if echoed != command:
            raise LinkError(f"{self.port}: a reply to command {echoed:#04x} came for {_name(command)}")
        return code, payload

    def _read(self, count, deadline, command):
        import serial
        data = b""
        while len(data) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._serial.timeout = left
            try:
                chunk = self._serial.read(count - len(data))
            except (serial.SerialException, OSError) as exc:
                raise LinkError(f"{self.port}: read failed ({exc})") from None
            if not chunk:
                break
            data += chunk
        if len(data) < count:
            raise LinkError(f"{self.port}: no reply to {_name(command)} within {self.timeout:g} s "
                            f"(is the board connected and configured?)")
        return data

    def call(self, command, payload=b""):
        """Send a command and return its reply's payload; a refusal is a LinkError."""
        self.send_raw(frame(command, payload))
        code, data = self.reply(command)
        if code != Reply.OK:
            try:
                name = Reply(code).name
            except ValueError:
                name = f"code {code:#04x}"
            raise LinkError(f"{self.port}: the board refused {_name(command)}: {name}")
        return data

    # ---- commands --------------------------------------------------------

    def status(self):
        data = self.call(Command.STATUS)
        if len(data) != STATUS_BYTES:
            raise LinkError(f"{self.port}: a STATUS reply of {len(data)} bytes, not {STATUS_BYTES}")
        state, code, cycles, words, ident = struct.unpack("<BIIII", data)
        return BoardStatus(RunState(state & 3), code, cycles, words, ident)

    def write(self, address, words, *, progress=None):
        """Write the 16-bit ``words`` from word ``address`` on, MAX_WORDS a frame."""
        words = np.asarray(words, dtype=np.int64) & 0xFFFF
        for at in range(0, len(words), MAX_WORDS):
            chunk = words[at:at + MAX_WORDS].astype("<u2").tobytes()
            self.call(Command.WRITE, struct.pack("<I", address + at) + chunk)
            if progress:
                progress(min(MAX_WORDS, len(words) - at))

    def read(self, address, count, *, progress=None):
        """``count`` words from word ``address`` on, as unsigned integers."""
        out = []
        for at in range(0, count, MAX_WORDS):
            n = min(MAX_WORDS, count - at)
            data = self.call(Command.READ, struct.pack("<IH", address + at, n))
            if len(data) != 2 * n:
                raise LinkError(f"{self.port}: READ returned {len(data)} bytes, not {2 * n}")
            out.append(np.frombuffer(data, dtype="<u2"))
            if progress:
                progress(n)
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def start(self):
        self.call(Command.START)

    def stop(self):
        self.call(Command.STOP)

    def wait(self, seconds, poll=0.01):
        """Poll STATUS until the processor is no longer running; its status."""
        deadline = time.monotonic() + seconds
        while True:
            status = self.status()
            if status.state != RunState.RUNNING:
                return status
            if time.monotonic() > deadline:
                raise LinkError(f"{self.port}: the network did not halt within {seconds:g} s "
                                f"(cycle counter at {status.cycles})")
            time.sleep(poll)
