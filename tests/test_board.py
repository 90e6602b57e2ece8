"""The host tool against the board: the ULX3S design on Verilator, its serial
line on a socket (``sim/rtl/board.py``), and against boards that misbehave."""

import re
import socket
import struct
import threading

import numpy as np
import pytest

from boards.link import BoardLink, LinkError, frame
from neuflow_hdl.hostlink import Command
from neuflow_hdl.presets import board
from sim.app.cli import main
from sim.app.verify import verify
from sim.rtl.board import SimulatedBoard, board_model

pytestmark = [pytest.mark.verilator, pytest.mark.xdist_group("verilator-board")]

DIGITS = "models/digits.onnx"


@pytest.fixture(scope="session")
def model():
    return board_model("ulx3s-85f", quiet=True)


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The digits network compiled for the board's grid."""
    out = tmp_path_factory.mktemp("digits-board")
    assert main(["compile", DIGITS, "--grid", board("ulx3s-85f").grid, "-o", str(out), "-q",
                 "--no-reference"]) == 0
    return out


def test_digits_run_on_the_board_bit_exact(model, digits, tmp_path, capsys):
    """``neuflow board run``, unchanged, sends the network to the simulated
    board, runs it and reads it back: equal to the reference engine."""
    x = np.random.default_rng(4).random((1, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with SimulatedBoard(model) as simulated:
        code = main(["board", "run", str(digits), "--input", str(tmp_path / "x.npy"), "--port", simulated.url,
                     "--output", str(tmp_path / "y.npy"), "--timeout", "30"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "bit for bit on every layer" in out and "start to halt" in out
    # The board's memory answers as the harness's does: the estimates hold on the board too.
    errors = [float(e) for e in re.findall(r"([+-]\d+\.\d)%$", out, re.M)]
    from compiler.artefacts import load_compiled
    manifest, image = load_compiled(digits)
    assert len(errors) == len(manifest["layers"]) and max(abs(e) for e in errors) < 5, out
    want = verify(manifest, image, x, "reference").outputs
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want.astype(np.float32))
    assert simulated.summary and simulated.summary["bytes_out"] > 2 * len(image)


def test_bad_frames_are_refused_and_touch_no_memory(model):
    words = np.arange(40, 48)
    with SimulatedBoard(model) as simulated, BoardLink(simulated.url, timeout=10) as link:
        link.write(1000, words)
        body = struct.pack("<BH", Command.WRITE, 4 + 2 * 8) + struct.pack("<I", 1000) + bytes(16)
        broken = bytes([0xA5]) + body + struct.pack("<H", 0x1234)
        link.send_raw(broken)
        assert link.reply(Command.WRITE)[0] == 0x01                     # BAD_CHECKSUM
        np.testing.assert_array_equal(link.read(1000, 8), words)
        with pytest.raises(LinkError, match="OUT_OF_RANGE"):
            link.read(board("ulx3s-85f").memory_words - 2, 4)
        link.send_raw(frame(0x42))
        assert link.reply(0x42)[0] == 0x02                              # BAD_COMMAND
        assert link.status().memory_words == board("ulx3s-85f").memory_words


def test_a_network_for_another_grid_is_refused(model, tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["compile", DIGITS, "--grid", "tiny", "-o", str(out), "-q", "--no-reference"]) == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    with SimulatedBoard(model) as simulated:
        code = main(["board", "run", str(out), "--input", str(tmp_path / "x.npy"), "--port", simulated.url])
    err = capsys.readouterr().err
    assert code == 2
    assert "carries the ulx3s-85f grid" in err and "compiled for tiny" in err and len(err.splitlines()) == 1


class FakeBoard:
    """A socket that accepts the host and answers each frame with ``answer`` (bytes)."""

    def __init__(self, answer=b""):
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(1)
        self.url = f"socket://127.0.0.1:{self._server.getsockname()[1]}"
        self._answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        host, _ = self._server.accept()
        with host:
            while host.recv(4096):
                if self._answer:
                    host.sendall(self._answer)


@pytest.mark.parametrize("answer, what", [(b"", "no reply to STATUS within 0.5 s"),
                                          (b"\x5a\x01\x00\x11", "no reply to STATUS within 0.5 s"),
                                          (b"\x5a\x01\x00\x00\x00\xff\xff", "bad checksum")])
def test_a_board_that_stops_answering(digits, tmp_path, capsys, answer, what):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    fake = FakeBoard(answer)
    code = main(["board", "run", str(digits), "--input", str(tmp_path / "x.npy"), "--port", fake.url,
                 "--timeout", "0.5"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert what in err and fake.url in err and len(err.splitlines()) == 1


def test_a_port_that_does_not_exist(digits, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    code = main(["board", "run", str(digits), "--input", str(tmp_path / "x.npy"), "--port", "/dev/nonexistent-tty"])
    err = capsys.readouterr().err
    assert code == 2 and "/dev/nonexistent-tty: cannot open" in err and len(err.splitlines()) == 1


def _program(source):
    from sim.golden.asm import assemble, to_words
    return to_words(assemble(source))


def test_run_control_busy_stop_and_fault(model):
    """A long loop: memory commands and START are BUSY while it runs, STOP
    abandons it; then a program that halts with code 7 leaves the board FAULT."""
    from neuflow_hdl.hostlink import RunState
    loop = _program("li r1, 0\nli r2, 100000000\nloop: addi r1, r1, 1\nblt r1, r2, loop\nhalt 0")
    with SimulatedBoard(model) as simulated, BoardLink(simulated.url, timeout=10) as link:
        link.write(0, loop)
        link.start()
        status = link.status()
        assert status.state == RunState.RUNNING and status.cycles > 0
        for refused in (lambda: link.read(0, 4), lambda: link.write(100, [1]), link.start):
            with pytest.raises(LinkError, match="BUSY"):
                refused()
        assert link.status().cycles > status.cycles
        link.stop()
        assert link.status().state == RunState.IDLE
        np.testing.assert_array_equal(link.read(0, len(loop)), loop)
        for _ in range(6):      # a STOP while a fetch is in flight must not leave its answer behind
            link.start()
            link.stop()
            np.testing.assert_array_equal(link.read(0, len(loop)), loop)
        link.write(0, _program("li r3, 5\nhalt 7"))
        link.start()
        status = link.wait(10)
        assert (status.state, status.halt_code) == (RunState.FAULT, 7)
        assert 0 < status.cycles < 100 and link.status().cycles == status.cycles
