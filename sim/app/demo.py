"""``make demo``: the shipped digits ConvNet, compiled and run cycle by cycle.

Compiles ``models/digits.onnx`` for a grid, runs N test images on the
Verilator model of the whole processor and on the reference engine, and
prints predictions, bit-exactness, accuracy against the float model, and
cycles per image and per layer.

    python -m sim.app.demo [--grid tiny] [--images 20 | --all]
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "digits.onnx"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="tiny")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--all", action="store_true", help="the whole test split (360 images)")
    parser.add_argument("--out", default=str(ROOT / "build" / "demo"))
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "models"))
    from train_digits import split

    import onnx
    from compiler import CompileError
    from compiler.artefacts import write_outputs
    from compiler.onnx_reference import run_onnx
    from compiler.pipeline import compile_model
    from sim.app.progress import image_bar
    from sim.app.verify import verify

    _, _, x_test, y_test = split()
    n = len(y_test) if args.all else min(args.images, len(y_test))
    x, y = x_test[:n], y_test[:n]
    print(f"demo: {MODEL.name} on grid {args.grid}, {n} test images of scikit-learn's digits")
    compiled = compile_model(MODEL, args.grid, progress=lambda t: print(f"  {t}"),
                             reference=False)
    manifest = write_outputs(compiled, args.out)
    config = compiled.config
    print(f"  compiled: {len(compiled.layers)} layers, "
          f"{sum(len(l.passes) for l in compiled.layers)} passes, program "
          f"{manifest['program_words']} words -> {args.out}")
    model = onnx.load(str(MODEL))
    float_logits = run_onnx(model, x)[model.graph.output[0].name]
    float_acc_all = (run_onnx(model, x_test)[model.graph.output[0].name].argmax(1) == y_test).mean()

    print("  running on Verilator (the first run builds the processor, a few minutes)", flush=True)
    try:
        with image_bar(n, desc="  ") as bar:
            result = verify(manifest, compiled.image, x, "rtl", progress=bar.update)
    except CompileError as exc:
        print(f"demo: {exc}")
        return 1
    hw_pred = [int(np.argmax(r.output)) for r in result.images]
    cycles = [r.cycles for r in result.images]
    mismatches = [f"image {i}: {r.mismatch}" for i, r in enumerate(result.images) if r.mismatch]

    print()
    print("  image:     " + " ".join(f"{i:>2}" for i in range(min(n, 30))))
    print("  true:      " + " ".join(f"{v:>2}" for v in y[:30]))
    print("  hardware:  " + " ".join(f"{v:>2}" for v in hw_pred[:30]))
    print("  float:     " + " ".join(f"{v:>2}" for v in float_logits.argmax(1)[:30]))
    if n > 30:
        print(f"  ({n - 30} more images not shown)")
    hw_acc = float(np.mean(np.array(hw_pred) == y))
    float_acc = float(np.mean(float_logits.argmax(1) == y))
    print()
    if mismatches:
        print(f"  bit-exact: NO: {len(mismatches)} image(s) differ; first: {mismatches[0]}")
    else:
        print(f"  bit-exact: hardware == reference engine on every word of every layer, "
              f"{n} / {n} images")
    print(f"  accuracy on these {n} images: hardware {100 * hw_acc:.1f}%, float (onnxruntime) "
          f"{100 * float_acc:.1f}%;  float on the whole test split: {100 * float_acc_all:.2f}%")
    mean = float(np.mean(cycles))
    print(f"  cycles per image: {mean:.0f} (min {min(cycles)}, max {max(cycles)}); "
          f"{config.clock_mhz * 1e6 / mean:.0f} frames/s at the grid's nominal "
          f"{config.clock_mhz:g} MHz")
    print()
    print(f"  {'layer':<12} {'op':<8} {'passes':>6} {'MACs':>7} {'cycles':>8} {'estimate':>9} "
          f"{'diff':>7} {'MACs/cycle':>10}")
    measured = result.mean_layer_cycles()
    for layer, cyc in zip(manifest["layers"], measured):
        est = layer["estimated_cycles"]
        print(f"  {layer['name']:<12} {layer['op']:<8} {layer['passes']:>6} {layer['macs']:>7} "
              f"{cyc:>8.0f} {est:>9} {100 * (est - cyc) / cyc:>+6.1f}% "
              f"{layer['macs'] / cyc:>10.2f}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
