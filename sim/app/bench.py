"""``make bench`` (hardware half): simulator speed, and the scene-parsing frame
measured on the ``neuflow-v6`` RTL.

1. Build time and simulated cycles per second of the fast Verilator harness
   (:mod:`sim.rtl.harness`) on each grid preset, running the three-layer
   pipeline program (sim/rtl/pipeline_program.py, a 64 x 48 image, repeated),
   checked bit for bit; and of Amaranth's Python simulator on ``tiny``.
2. The scene-parsing network of the compiler bench (320x240 alone, and the
   two small scales packed into one image) compiled for ``neuflow-v6`` and
   run on its RTL as partitioned runs (one piece per resume point: every
   layer, and runs of about RESUME_EVERY estimated cycles inside long
   layers; in parallel, each checked bit for bit against the reference
   engine): measured cycles per layer beside the compiler's estimate,
   frames/s at the preset's clock, and the wall time of the simulation.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from compiler.artefacts import write_outputs
from compiler.codegen import RESUME_EVERY
from compiler.pipeline import compile_model
from neuflow_hdl.numerics import wrap_signed
from neuflow_hdl.presets import PRESETS, preset
from neuflow_hdl.soc import SoC
from sim.app.bench_compiler import GRID, NEUFLOW_FPS, SMALL_CANVAS, scene_parsing, useful_macs
from sim.app.parallel import default_workers
from sim.app.partition import count_pieces, run_networks
from sim.rtl.pipeline_program import three_layer_pipeline
from sim.app.progress import image_bar
from sim.rtl.pysim import memory_process
from sim.rtl.runner import run_image, soc_build

PYSIM_CYCLES = 3000
REPEAT = 20         #: image passes per run, so the run outlasts start-up
#: The frame: 320x240 alone, then the two small scales packed (the compiler bench's best schedule).
FRAME = ((240, 320), SMALL_CANVAS)
#: Where the frame's networks are written, each with its report and pictures.
REPORTS = Path(__file__).resolve().parents[2] / "build" / "bench"


def harness_speed(grid):
    config = preset(grid)
    build = soc_build(grid)
    job = three_layer_pipeline(config, np.random.default_rng(1), repeat=REPEAT)
    result = run_image(job.image, grid)
    got = result.memory[job.output:job.output + job.expected.size]
    exact = np.array_equal(wrap_signed(got, config.fmt.width), job.expected.ravel())
    return {"grid": grid, "build_s": build.build_seconds, "cached": build.cached, "modules": build.modules,
            "cycles": result.cycles,
            "seconds": result.seconds, "loop_seconds": result.loop_seconds,
            "rate": result.cycles / max(result.loop_seconds, 1e-9), "exact": exact}


def pysim_speed(grid):
    from amaranth.sim import Simulator
    config = preset(grid)
    job = three_layer_pipeline(config, np.random.default_rng(1))
    memory = np.zeros(-(-len(job.image) // config.beat_words) * config.beat_words, dtype=np.int64)
    memory[:len(job.image)] = job.image
    soc = SoC(config)
    sim = Simulator(soc)
    sim.add_clock(1e-8)
    sim.add_process(memory_process(soc.memory, memory, np.random.default_rng(0), config.beat_words,
                                   ready=1.0, max_latency=2))
    started = time.monotonic()
    sim.run_until(PYSIM_CYCLES * 1e-8)
    return PYSIM_CYCLES / (time.monotonic() - started)


def bench_speed():
    print(f"Simulator speed: the three-layer pipeline (64 x 48 image, {REPEAT} passes), bit for bit "
          f"against numpy")
    rows = []
    for grid in PRESETS:
        print(f"  building / running {grid} on the Verilator harness ...", flush=True)
        rows.append(harness_speed(grid))
    print(f"  running tiny on Amaranth's Python simulator ({PYSIM_CYCLES} cycles) ...", flush=True)
    py_rate = pysim_speed("tiny")
    print(f"\n  {'grid':<11} {'engine':<17} {'build s':>8} {'modules':>9} {'cycles':>8} {'run s':>6} "
          f"{'cycles/s':>10} {'bit-exact':>9}")
    for r in rows:
        built = f"{r['build_s']:.0f}" + ("*" if r["cached"] else "")
        print(f"  {r['grid']:<11} {'verilator harness':<17} {built:>8} {'%d/%d' % r['modules']:>9} "
              f"{r['cycles']:>8} {r['seconds']:>6.2f} {r['rate']:>10,.0f} {str(r['exact']):>9}")
    print(f"  {'tiny':<11} {'amaranth pysim':<17} {'':>8} {'':>9} {PYSIM_CYCLES:>8} {'':>6} {py_rate:>10,.0f}")
    print("  (build s: * when the build was cached, the time it took when it was made; modules: "
          "Verilog modules written / after sharing identical ones; run s: the whole run; cycles/s: "
          "over the simulated cycles alone)")
    return all(r["exact"] for r in rows)


def bench_frame(workers=None, dask=None):
    config = preset(GRID)
    print(f"\nScene parsing on the {GRID} RTL: 320x240 alone + the two small scales packed, random "
          f"weights and input; one piece per resume point (each layer, and about every "
          f"{RESUME_EVERY:,} estimated cycles inside long layers), in parallel, each bit for bit against "
          f"the reference engine")
    rng = np.random.default_rng(2012)
    started = time.monotonic()
    networks, names = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for height, width in FRAME:
            path = Path(workdir) / f"scene_{width}x{height}.onnx"
            onnx.save(scene_parsing(height, width, rng), path)
            compiled = compile_model(path, GRID, reference=False)
            write_outputs(compiled, REPORTS / f"scene_{width}x{height}")
            networks.append((compiled, rng.normal(0.0, 1.0, (3, height, width)).astype(np.float32), None))
            names.append(f"{width}x{height}")
    compiled_at = time.monotonic()
    print(f"  reports, with where the cycles go (estimated) in pictures: "
          f"{', '.join(str(REPORTS / f'scene_{w}x{h}' / 'report.md') for h, w in FRAME)}")
    count = sum(count_pieces(c) for c, _, _ in networks)
    with image_bar(count, desc="  pieces", unit="piece") as bar:
        runs = run_networks(networks, workers=workers, dask=dask, done=bar.update)
    rows, exact, steps, longest = [], True, 0, None
    for name, (compiled, _, _), run in zip(names, networks, runs):
        exact &= run.bit_exact
        steps += run.steps
        for piece in run.pieces:
            if longest is None or piece.seconds > longest.seconds:
                longest = piece
        for layer, measured in zip(compiled.layers, run.layer_cycles):
            rows.append((f"{name} {layer.name}", layer.cycles, measured))
        for piece in run.pieces:
            if piece.mismatch:
                print(f"  MISMATCH {piece.mismatch}")
    wall = time.monotonic() - started
    print(f"\n  {'layer':<24} {'estimated':>11} {'measured':>11} {'estimate off':>12}")
    for name, estimated, measured in rows:
        print(f"  {name:<24} {estimated:>11,} {measured:>11,} {100 * (estimated - measured) / measured:>+11.1f}%")
    estimated = sum(r[1] for r in rows)
    measured = sum(r[2] for r in rows)
    useful = sum(useful_macs(h, w) for h, w in ((240, 320), (120, 160), (60, 80)))
    fps = config.clock_mhz * 1e6 / measured
    print(f"  {'frame':<24} {estimated:>11,} {measured:>11,} "
          f"{100 * (estimated - measured) / measured:>+11.1f}%")
    print(f"\n  measured: {measured:,} cycles per frame = {fps:.1f} frames/s at {config.clock_mhz:g} MHz "
          f"({fps / NEUFLOW_FPS:.2f}x NeuFlow's {NEUFLOW_FPS:g}); {useful / measured:.0f} useful MACs per "
          f"cycle = {100 * useful / measured / config.convolver_macs:.0f}% of the "
          f"{config.convolver_macs} convolver MACs")
    print(f"  bit-exact on every piece: {exact}; simulation wall time {wall - (compiled_at - started):.0f} s "
          f"for {steps:,} simulated cycles on {default_workers() if dask is None else 'the cluster'} "
          f"worker(s) (the reference engine's checkpoints included; the compiles took "
          f"{compiled_at - started:.0f} s more); {count} pieces, the longest {longest.seconds:.1f} s "
          f"for {longest.steps:,} cycles")
    return exact


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ok = bench_speed()
    if "--no-frame" not in argv:
        ok &= bench_frame()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
