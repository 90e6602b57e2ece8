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
* The 'light' model structures shipped with ``onnx``: scheduled and generated
  without linking (:func:`compiler.pipeline.estimate_model`, the compile's own
  estimate); their full compile stops with the memory error it prints.

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
from compiler.pipeline import compile_model, estimate_model
from neuflow_hdl.presets import preset
from sim.app.progress import layer_bar

GRID = "neuflow-v6"
SCALES = ((240, 320), (120, 160), (60, 80))
NEUFLOW_FPS = 20.0          #: NeuFlow on the Virtex-6: 320x240, three scales, 680 MACs at 200 MHz
LIGHT = ("light_bvlc_alexnet", "light_vgg19", "light_resnet50")


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


def useful_macs(height, width):
    """Multiply-accumulates of the network on one scale (valid convolutions and the
    fan-ins), the figure NeuFlow's papers count (2.2 G per frame)."""
    macs = 0
    for outs, _, fan_in, pooled in STAGES:
        height, width = height - 6, width - 6
        macs += outs * fan_in * 49 * height * width
        if pooled:
            height, width = height // 2, width // 2
    return macs


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
          f"{'of the convolvers':>18} {'vs NeuFlow':>10}")
    for name, cycles in (("three scales one by one", separate), ("packed pyramid", packed),
                         ("320x240 + small scales", mixed)):
        fps = clock / cycles
        print(f"  {name:<26} {cycles:>13,} {fps:>9.1f} {useful / cycles:>18.0f} "
              f"{100 * useful / cycles / bound:>17.0f}% {fps / NEUFLOW_FPS:>9.2f}x")
    print(f"  {'NeuFlow (Virtex-6)':<26} {clock / NEUFLOW_FPS:>13,.0f} {NEUFLOW_FPS:>9.1f} "
          f"{useful * NEUFLOW_FPS / clock:>18.0f} {'(of 680)':>18}")
    print(f"  ({useful / 1e9:.2f} G useful MACs per frame, three scales)")


def bench_light(config):
    from onnx.backend.test.loader import __file__ as loader
    data = Path(loader).parent.parent / "data" / "light"
    print(f"\nLight model structures (onnx package) on {GRID}: estimate without linking", flush=True)
    print(f"  {'model':<20} {'schedule s':>10} {'passes':>9} {'G MACs':>7} {'M cycles':>9} "
          f"{'frames/s':>9} {'MACs/cycle':>10}   full compile")
    for name in LIGHT:
        path = data / f"{name}.onnx"
        started = time.monotonic()
        try:
            compile_model(path, GRID, reference=False)
            outcome = f"compiled in {time.monotonic() - started:.1f} s"
        except CompileError as exc:
            outcome = f"stops after {time.monotonic() - started:.1f} s: {exc}"
        with layer_bar(f"  {name}") as progress:
            r = estimate_model(path, GRID, progress=progress)
        cycles = sum(l["cycles"] for l in r["layers"])
        macs = sum(l["macs"] for l in r["layers"])
        passes = sum(l["passes"] for l in r["layers"])
        print(f"  {name:<20} {r['seconds']:>10.1f} {passes:>9,} {macs / 1e9:>7.2f} "
              f"{cycles / 1e6:>9.1f} {config.clock_mhz * 1e6 / cycles:>9.2f} "
              f"{macs / cycles:>10.1f}   {outcome}", flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    config = preset(GRID)
    with tempfile.TemporaryDirectory() as workdir:
        bench_scene_parsing(config, workdir)
    if "--no-light" not in argv:
        bench_light(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
