"""The board model: a board's design on Verilator, its serial line on a TCP socket.

:func:`board_model` builds :class:`neuflow_hdl.hosted.HostedSimTop` for a
board of :data:`neuflow_hdl.presets.BOARDS` (the same design as the board's
top, with a plain clock instead of the PLL and a faster serial line,
``BoardConfig.sim_divisor`` cycles a bit) under ``board_harness.cpp``, which
bridges the line to a socket.  :class:`SimulatedBoard` runs it: the host tool
reaches it as ``socket://127.0.0.1:PORT`` through pyserial, exactly as it
reaches a board on ``/dev/ttyUSB0``.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from neuflow_hdl.hosted import LED, HostedSimTop
from neuflow_hdl.presets import board

from .harness import HarnessError, build_plain, cached_build, cached_folder, verilate_command

__all__ = ["BoardModel", "board_model", "SimulatedBoard"]

BRIDGE = Path(__file__).resolve().parent / "board_harness.cpp"


@dataclass(frozen=True)
class BoardModel:
    board: str
    executable: Path
    build_seconds: float
    cached: bool


def board_model(name="ulx3s-85f", *, jobs=None, quiet=False):
    """The Verilator model of the board ``name`` (built once, then cached)."""
    spec = board(name)
    config = spec.config
    top_name = f"board_{name.replace('-', '_')}"
    folder = cached_folder("board", top_name, [BRIDGE.read_bytes(), Path(__file__).read_bytes(),
                                               repr(spec).encode(), repr(config).encode()])

    def build():
        if not quiet:
            print(f"board model: building {name} in {folder}", file=sys.stderr)
        defines = [f"-DDIVISOR={spec.sim_divisor}", f"-DRESET_CYCLES={HostedSimTop.RESET_CYCLES}",
                   f"-DRUNNING_LED={LED['running']}"]
        command, modules = verilate_command(HostedSimTop(config, divisor=spec.sim_divisor), top_name, folder,
                                            BRIDGE, defines)
        build_plain(command, folder, jobs or os.cpu_count() or 1, top_name)
        return {"modules": modules}

    record, cached = cached_build(folder, build)
    return BoardModel(name, folder / "Vtop", record["seconds"], cached)


class SimulatedBoard:
    """The board model running, listening on a free port of 127.0.0.1 (``url``),
    until the host closes its connection (or the context exits)."""

    def __init__(self, model, *, max_cycles=2_000_000_000):
        self._process = subprocess.Popen([str(model.executable), f"+max_cycles={int(max_cycles)}"],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self._process.stdout.readline()
        try:
            self.port = int(json.loads(line)["port"])
        except (ValueError, KeyError):
            self._process.kill()
            raise HarnessError(f"the board model did not start: {line or self._process.stderr.read()}") from None
        self.url = f"socket://127.0.0.1:{self.port}"
        self.summary = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self, timeout=30):
        """Wait for the model to finish (the host has closed its connection); its summary."""
        try:
            out, _ = self._process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            out, _ = self._process.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        self.summary = json.loads(lines[-1]) if lines else None
        return self.summary
