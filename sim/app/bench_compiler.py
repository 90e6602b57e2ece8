"""``make bench`` (compiler half): compile time and estimated frames/s.

* The scene-parsing network of NeuFlow's papers (Farabet et al.) with
  random weights, as NeuFlow ran it on the FPGA: YUV input already contrast-
  normalised (host), three stages of 7x7 convolutions with the published
  fan-ins as connection tables (a dense ONNX Conv whose unconnected kernels are
  zero; the compiler drops zero kernels), tanh, 2x2 sum pooling, at three
  scales (320x240, 160x120, 80x60); the classifier on the host.  Compiled in
  full (program, image) for ``neuflow-v6``: each scale alone, the pyramid
  packed into one image as NeuFlow ran it, and 320x240 alone with the two
  small scales packed (their passes are too short to hide the kernel loads).
* The model zoo (:mod:`sim.app.zoo`): the nine network structures shipped
  with ``onnx``, with seeded random weights, compiled in full; per network the
  compile time, program and image words, passes, estimated frames/s and the
  convolver MACs' use in convolution and in fully connected layers.

Frames/s use the compiler's cycle estimate (calibrated against the RTL on the
``tiny`` grid, see docs/compiler.md) at the preset's nominal clock.  MAC
utilisation is useful MACs per cycle against the convolvers' K x K multipliers.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler import CompileError
from compiler.accuracy import measure_errors
from compiler.pipeline import compile_model
from neuflow_hdl.presets import preset
from sim.app.zoo import ZOO, zoo_model

GRID = "neuflow-v6"
SCALES = ((240, 320), (120, 160), (60, 80))
NEUFLOW_FPS = 20.0          #: NeuFlow on the Virtex-6: 320x240, three scales, 680 MACs at 200 MHz
FULLY_CONNECTED = ("Gemm", "MatMul")


def connection_table(rng, outputs, inputs, fan_in, fixed=None):
    """(outputs, inputs) 0/1 mask: ``fixed[o]`` the input of output o, or
    ``fan_in`` random distinct inputs per output."""
    mask = np.zeros((outputs, inputs))
    for o in range(outputs):
        picks = [fixed[o]] if fixed is not None else rng.choice(inputs, fan_in, replace=False)
        mask[o, picks] = 1.0
    return mask


STAGES = [  # outputs, inputs, fan-in, pooled
    (16, 3, 1, True), (64, 16, 8, True), (256, 64, 32, False)]
#: NeuFlow packed the pyramid into one image so that the network compiled once:
#: 320x240 on the left, 160x120 and 80x60 stacked on the right, 8-pixel gaps.
CANVAS = (240, 320 + 8 + 160)
#: Or only the two small scales stacked (160x120 over 80x60, 8 rows apart), next to
#: 320x240 alone: the small scales then share their kernel loads.
SMALL_CANVAS = (120 + 8 + 60, 160)


def _stages(height, width):
    """Per stage of the network on one ``height x width`` scale: (outputs, fan-in,
    its input's height and width, its output's height and width before pooling)."""
    for outs, _, fan_in, pooled in STAGES:
        yield outs, fan_in, height, width, height - 6, width - 6
        height, width = height - 6, width - 6
        if pooled:
            height, width = height // 2, width // 2


def useful_macs(height, width):
    """Multiply-accumulates of the network on one scale (valid convolutions and the
    fan-ins), the figure NeuFlow's papers count (2.2 G per frame)."""
    return sum(outs * fan_in * 49 * ho * wo for outs, fan_in, _, _, ho, wo in _stages(height, width))


def stream_bound(height, width, tiles):
    """The fewest cycles the network on one ``height x width`` image can take on
    ``tiles`` tiles: each term of each output streams its input map through a
    tile at one word a cycle, and nothing else costs (no border window is
    skipped: every input word is in some valid window)."""
    return sum(outs * fan_in * h * w for outs, fan_in, h, w, _, _ in _stages(height, width)) / tiles


def scene_parsing(height, width, rng):
    """The three-stage scene-parsing ConvNet at one scale, as an ONNX model."""
    stages = STAGES
    nodes, inits = [], []
    x = "yuv"
    for s, (outs, ins, fan_in, pooled) in enumerate(stages, 1):
        fixed = [0] * 12 + [1] * 2 + [2] * 2 if s == 1 else None
        mask = connection_table(rng, outs, ins, fan_in, fixed)
        w = rng.normal(0.0, 1.0 / np.sqrt(49 * fan_in), (outs, ins, 7, 7)) * mask[:, :, None, None]
        b = rng.normal(0.0, 0.05, outs)
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{s}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{s}")]
        nodes.append(helper.make_node("Conv", [x, f"w{s}", f"b{s}"], [f"c{s}"], name=f"conv{s}",
                                      kernel_shape=[7, 7]))
        x = f"c{s}"
        if s < 3:
            nodes.append(helper.make_node("Tanh", [x], [f"t{s}"], name=f"tanh{s}"))
            x = f"t{s}"
        if pooled:
            nodes.append(helper.make_node("AveragePool", [x], [f"p{s}"], name=f"pool{s}",
                                          kernel_shape=[2, 2], strides=[2, 2]))
            x = f"p{s}"
    graph = helper.make_graph(nodes, "scene_parsing",
                              [helper.make_tensor_value_info("yuv", TensorProto.FLOAT,
                                                             [1, 3, height, width])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


def layer_table(rows, config):
    """Per-layer lines: passes, MACs, cycles, MACs/cycle, utilisation."""
    bound = config.convolver_macs
    lines = [f"    {'layer':<12} {'op':<12} {'output':<14} {'passes':>7} {'MACs':>13} "
             f"{'cycles':>11} {'MACs/cycle':>10} {'util.':>6}"]
    for r in rows:
        rate = r["macs"] / max(r["cycles"], 1)
        lines.append(f"    {r['name']:<12} {r['op']:<12} {'x'.join(map(str, r['shape'])):<14} "
                     f"{r['passes']:>7} {r['macs']:>13,} {r['cycles']:>11,} {rate:>10.1f} "
                     f"{100 * rate / bound:>5.1f}%")
    return lines


def _compile(height, width, rng, config, workdir):
    path = Path(workdir) / f"scene_{width}x{height}.onnx"
    onnx.save(scene_parsing(height, width, rng), path)
    started = time.monotonic()
    compiled = compile_model(path, GRID, reference=False)
    seconds = time.monotonic() - started
    manifest = compiled.manifest()
    rows = [{"name": l["name"], "op": l["op"], "shape": l["shape"], "passes": l["passes"],
             "macs": l["macs"], "cycles": l["estimated_cycles"]} for l in manifest["layers"]]
    cycles = manifest["estimated_cycles"]
    print(f"  {width}x{height}: compiled in {seconds:.1f} s; program {manifest['program_words']:,} "
          f"words, image {manifest['memory_words']:,} words; {cycles:,} cycles, "
          f"{sum(r['macs'] for r in rows) / 1e6:,.1f} M MACs", flush=True)
    print("\n".join(layer_table(rows, config)))
    return cycles


def bench_scene_parsing(config, workdir):
    bound = config.convolver_macs
    clock = config.clock_mhz * 1e6
    print(f"Scene parsing (Farabet et al.), random weights, on {GRID}: {config.rows}x{config.columns} "
          f"tiles, K={config.kernel} ({bound} convolver MACs), {config.clock_mhz:g} MHz", flush=True)
    useful = sum(useful_macs(h, w) for h, w in SCALES)
    rng = np.random.default_rng(2012)
    print("Three scales compiled one by one:")
    separate_cycles = [_compile(h, w, rng, config, workdir) for h, w in SCALES]
    separate = sum(separate_cycles)
    print(f"\nThe pyramid packed into one {CANVAS[1]}x{CANVAS[0]} image (as NeuFlow ran it; the "
          f"outputs across the seams are discarded):")
    packed = _compile(*CANVAS, rng, config, workdir)
    print(f"\nThe two small scales packed into one {SMALL_CANVAS[1]}x{SMALL_CANVAS[0]} image, "
          f"320x240 alone (above):")
    mixed = separate - sum(separate_cycles[1:]) + _compile(*SMALL_CANVAS, rng, config, workdir)
    print(f"\n  {'schedule':<26} {'cycles/frame':>13} {'frames/s':>9} {'useful MACs/cycle':>18} "
          f"{'of the convolvers':>18} {'vs NeuFlow':>10}   {'stream bound (frames/s)':>23}")
    tiles = config.tiles
    for name, cycles, images in (("three scales one by one", separate, SCALES), ("packed pyramid", packed, [CANVAS]),
                                 ("320x240 + small scales", mixed, [SCALES[0], SMALL_CANVAS])):
        fps = clock / cycles
        least = sum(stream_bound(h, w, tiles) for h, w in images)
        print(f"  {name:<26} {cycles:>13,} {fps:>9.1f} {useful / cycles:>18.0f} "
              f"{100 * useful / cycles / bound:>17.0f}% {fps / NEUFLOW_FPS:>9.2f}x   "
              f"{least:>12,.0f} ({clock / least:.1f})")
    print(f"  {'NeuFlow (Virtex-6)':<26} {clock / NEUFLOW_FPS:>13,.0f} {NEUFLOW_FPS:>9.1f} "
          f"{useful * NEUFLOW_FPS / clock:>18.0f} {'(of 680)':>18}")
    print(f"  ({useful / 1e9:.2f} G useful MACs per frame, three scales; stream bound: each output's "
          f"terms stream their input maps through the {tiles} tiles at a word a cycle and nothing "
          f"else costs, so a valid convolution's border windows, which every tile computes, are the "
          f"only loss)")


def _utilisation(layers, config, fc):
    """Useful MACs per cycle and the share of the convolver MACs, over the
    fully connected layers (``fc``) or the others."""
    rows = [l for l in layers if (l["op"] in FULLY_CONNECTED) == fc]
    macs, cycles = sum(l["macs"] for l in rows), sum(l["estimated_cycles"] for l in rows)
    rate = macs / cycles if cycles else 0.0
    return f"{rate:>7.1f} {100 * rate / config.convolver_macs:>5.1f}%"


def bench_zoo(config, workdir, names=ZOO, reference=False):
    """The nine structures of the ``onnx`` package with seeded random weights
    (:mod:`sim.app.zoo`), compiled in full for ``neuflow-v6`` with two random
    calibration inputs within ±3; with ``reference``, each also runs on the
    reference engine against onnxruntime (the output's error, its bound and
    SNR, and the run's seconds)."""
    print(f"\nThe model zoo on {GRID} (structures of the onnx package, seeded random weights; "
          f"compiled in full, calibrated on two random inputs within ±3):", flush=True)
    print(f"  {'model':<20} {'compile s':>9} {'program':>9} {'image words':>12} {'passes':>8} "
          f"{'M cycles':>9} {'frames/s':>8}   {'conv MACs/cycle':>15}   {'FC MACs/cycle':>13}")
    x = np.random.default_rng(1).normal(0.0, 1.0, (2, 3, 224, 224)).clip(-3.0, 3.0)
    for name in names:
        path = Path(workdir) / f"{name}.onnx"
        onnx.save(zoo_model(name), path)
        started = time.monotonic()
        try:
            compiled = compile_model(path, GRID, calibration=x, reference=False)
        except CompileError as exc:
            print(f"  {name:<20} stops after {time.monotonic() - started:.1f} s: {exc}", flush=True)
            continue
        seconds = time.monotonic() - started
        checked = ""
        if reference:
            started = time.monotonic()
            row = measure_errors(compiled, onnx.load(path), x[:1], "the first calibration input").rows[-1]
            checked = (f"   output error {row['max_abs']:.3g} (bound {row['bound']:.3g}), SNR "
                       f"{row['snr_db']:.1f} dB, reference engine {time.monotonic() - started:.0f} s")
        manifest = compiled.manifest()
        layers, cycles = manifest["layers"], manifest["estimated_cycles"]
        print(f"  {name:<20} {seconds:>9.1f} {manifest['program_words']:>9,} {manifest['memory_words']:>12,} "
              f"{sum(l['passes'] for l in layers):>8,} {cycles / 1e6:>9.2f} "
              f"{config.clock_mhz * 1e6 / cycles:>8.2f}   {_utilisation(layers, config, False):>15}   "
              f"{_utilisation(layers, config, True):>13}{checked}", flush=True)
        del compiled


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    config = preset(GRID)
    if "--zoo-only" not in argv:
        with tempfile.TemporaryDirectory() as workdir:
            bench_scene_parsing(config, workdir)
    if "--no-zoo" not in argv:
        with tempfile.TemporaryDirectory() as workdir:
            bench_zoo(config, workdir, reference="--zoo-reference" in argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
