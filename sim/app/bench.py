"""``make bench``: simulator speed of the whole processor.

Runs the three-layer pipeline program (sim/pipeline_program.py, a 64 x 48
image) on the simulation top of each grid preset under Verilator, and the
same SoC on Amaranth's Python simulator for a fixed number of cycles, and
prints simulated cycles per second and their ratio.
"""

import sys
import time

import numpy as np

from neuflow_hdl.presets import preset
from neuflow_hdl.soc import SoC
from sim.app.pipeline_program import three_layer_pipeline
from sim.rtl.pysim import memory_process
from sim.rtl.runner import run_image, soc_build

PYSIM_CYCLES = 3000
REPEAT = 20         #: image passes per Verilator run, so the run outlasts start-up


def verilator_speed(grid):
    config = preset(grid)
    started = time.monotonic()
    soc_build(grid)
    built = time.monotonic() - started
    job = three_layer_pipeline(config, np.random.default_rng(1), repeat=REPEAT)
    # A program that halts at once measures the fixed cost of starting a simulation.
    empty = run_image(np.array([0, 0, 0, 0x0100]), grid)
    result = run_image(job.image, grid)
    got = result.memory[job.output:job.output + job.expected.size]
    exact = np.array_equal(np.where(got >= 1 << 15, got - (1 << 16), got), job.expected.ravel())
    net = max(result.seconds - empty.seconds, 1e-9)
    return {"grid": grid, "build_s": built, "cycles": result.cycles, "seconds": result.seconds,
            "net_seconds": net, "rate": result.cycles / net, "exact": exact}


def pysim_speed(grid):
    from amaranth.sim import Simulator
    config = preset(grid)
    job = three_layer_pipeline(config, np.random.default_rng(1))
    memory = np.zeros(config.memory_words, dtype=np.int64)
    memory[:len(job.image)] = job.image
    soc = SoC(config)
    sim = Simulator(soc)
    sim.add_clock(1e-8)
    sim.add_process(memory_process(soc.memory, memory, np.random.default_rng(0), config.beat_words,
                                   ready=1.0, max_latency=2))
    started = time.monotonic()
    sim.run_until(PYSIM_CYCLES * 1e-8)
    return PYSIM_CYCLES / (time.monotonic() - started)


def main():
    print(f"NeuFlow bench: simulated cycles per second, three-layer pipeline (64 x 48 image, "
          f"{REPEAT} passes on Verilator)")
    rows = []
    for grid in ("tiny", "ulx3s-85f"):
        print(f"  building / running {grid} on Verilator ...", flush=True)
        rows.append(verilator_speed(grid))
    print(f"  running tiny on Amaranth's Python simulator ({PYSIM_CYCLES} cycles) ...", flush=True)
    py_rate = pysim_speed("tiny")
    print()
    print(f"{'grid':<10} {'engine':<10} {'cycles':>8} {'run s':>7} {'net s':>7} {'cycles/s':>11} "
          f"{'bit-exact':>9} {'build s':>8}")
    for r in rows:
        print(f"{r['grid']:<10} {'verilator':<10} {r['cycles']:>8} {r['seconds']:>7.2f} "
              f"{r['net_seconds']:>7.2f} {r['rate']:>11,.0f} {str(r['exact']):>9} {r['build_s']:>8.0f}")
    print(f"{'tiny':<10} {'amaranth':<10} {PYSIM_CYCLES:>8} {'':>7} {'':>7} {py_rate:>11,.0f}")
    print(f"\nVerilator / Amaranth simulator on tiny: {rows[0]['rate'] / py_rate:,.0f} x")
    print("(net s: run time less the fixed start-up of a simulation, measured with a program "
          "that halts at once)")
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
