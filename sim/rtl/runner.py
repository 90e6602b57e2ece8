"""Run a memory image on the simulated processor (Verilator, through cocotb).

The simulation top (:class:`neuflow_hdl.soc.SimTop`) is built once per grid
preset and cached; the image is loaded by the behavioural memory
($readmemh) and written back at halt ($writememh), so the whole run happens
at Verilator speed with no Python in the per-cycle loop.
"""

import json
from functools import lru_cache
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuflow_hdl.hexfile import read_hex, write_hex
from neuflow_hdl.presets import preset
from neuflow_hdl.soc import SimTop

from .verilator import BUILD_ROOT, build

__all__ = ["RunResult", "soc_build", "run_image"]

SIM_MEMORY = Path(__file__).resolve().parent / "sim_memory.v"


@dataclass
class RunResult:
    memory: np.ndarray      #: every memory word after halt (unsigned codes)
    halted: bool
    halt_code: int
    cycles: int             #: clock cycles from reset to halt
    seconds: float          #: wall-clock time of the simulation, start-up included


@lru_cache(maxsize=None)
def soc_build(grid="tiny", *, waves=False):
    """The Verilator build of the simulation top for a preset (cached on disk, and
    per process: elaborating the design to find the cached build takes seconds)."""
    config = preset(grid)
    return build(SimTop(config), f"soc_{grid.replace('-', '_')}", waves=waves,
                 extra_sources=[SIM_MEMORY], private=True), config


def run_image(image, grid="tiny", *, latency=2, jitter=0, max_cycles=50_000_000, trace=None,
              seed=1):
    """Run ``image`` (memory words, from address 0) to halt; return a :class:`RunResult`.

    ``trace``: an ``.fst`` file to write the run's waveform to (a separate,
    traced build of the top, made once).
    """
    if trace is not None and Path(trace).suffix != ".fst":
        raise ValueError(f"trace {trace}: traces are FST files; name it .fst")
    design, config = soc_build(grid, waves=trace is not None)
    image = np.asarray(image)
    if len(image) > config.memory_words:
        raise ValueError(f"image of {len(image)} words does not fit the {config.memory_words}-word "
                         f"memory of grid {grid}")
    runs = BUILD_ROOT / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=runs) as work:
        work = Path(work)
        write_hex(work / "image.hex", image, config.fmt.width)
        params = {"max_cycles": max_cycles, "result": str(work / "result.json")}
        started = time.monotonic()
        tests, failed = design.run(
            "sim.rtl.cocotb_run", test_dir=work, env={"NEUFLOW_RUN": json.dumps(params)},
            trace=None if trace is None else Path(trace).resolve(),
            plusargs=[f"+image={work / 'image.hex'}", f"+dump={work / 'dump.hex'}",
                      f"+latency={latency}", f"+jitter={jitter}", f"+verilator+seed+{seed}"],
            log_file=work / "simulation.log")
        seconds = time.monotonic() - started
        if tests != 1 or failed:
            log = (work / "simulation.log").read_text()[-3000:] if (work / "simulation.log").exists() else ""
            raise RuntimeError(f"simulation failed:\n{log}")
        result = json.loads((work / "result.json").read_text())
        memory = (read_hex(work / "dump.hex", config.memory_words) if result["halted"]
                  else np.zeros(config.memory_words, dtype=np.int64))
    return RunResult(memory=memory, halted=bool(result["halted"]), halt_code=result["halt_code"],
                     cycles=result["cycles"], seconds=seconds)
