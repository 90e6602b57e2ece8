"""Run a memory image on the simulated processor (Verilator, fast harness).

The simulation top (:class:`neuflow_hdl.soc.SimTop`) is built once per grid
preset under a C++ main that is also its memory (:mod:`sim.rtl.harness`),
and cached; a run writes the image, runs the executable to halt and reads
the memory back, with no Python in the per-cycle loop.
"""

import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .harness import HarnessError, harness_build, read_dump, run_harness
from .verilator import BUILD_ROOT

__all__ = ["RunResult", "soc_build", "run_image", "HarnessError"]


@dataclass
class RunResult:
    memory: np.ndarray      #: the memory after halt (unsigned codes), as long as the image or
                            #: up to the highest word written (every word above is zero)
    halted: bool
    halt_code: int
    cycles: int             #: clock cycles from reset to halt
    seconds: float          #: wall-clock time of the simulation, start-up included
    loop_seconds: float     #: wall-clock time of the simulated cycles alone


@lru_cache(maxsize=None)
def soc_build(grid="tiny", *, waves=False):
    """The fast Verilator build of the simulation top for a preset (cached on
    disk by its sources, and per process)."""
    return harness_build(grid, waves=waves)


def run_image(image, grid="tiny", *, latency=2, jitter=0, max_cycles=50_000_000, trace=None,
              seed=1):
    """Run ``image`` (memory words, from address 0) to halt; return a :class:`RunResult`.

    ``trace``: an ``.fst`` file to write the run's waveform to (a separate,
    traced build of the top, made once).
    """
    if trace is not None and Path(trace).suffix != ".fst":
        raise ValueError(f"trace {trace}: traces are FST files; name it .fst")
    design = soc_build(grid, waves=trace is not None)
    image = np.asarray(image)
    if len(image) > design.memory_words:
        raise ValueError(f"image of {len(image)} words does not fit the {design.memory_words}-word "
                         f"memory of grid {grid}")
    runs = BUILD_ROOT / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=runs) as work:
        run = run_harness(design, image, work, latency=latency, jitter=jitter, seed=seed,
                          max_cycles=max_cycles, trace=None if trace is None else Path(trace).resolve())
        if run.fault:
            raise HarnessError(f"simulation of grid {grid}: {run.fault}")
        if run.halted:
            dumped = read_dump(design, run.dump)
            memory = np.zeros(max(len(dumped), len(image)), dtype=np.int64)
            memory[:len(dumped)] = dumped
        else:
            memory = np.zeros(len(image), dtype=np.int64)
    return RunResult(memory=memory, halted=run.halted, halt_code=run.halt_code, cycles=run.cycles,
                     seconds=time.monotonic() - started, loop_seconds=run.seconds)
