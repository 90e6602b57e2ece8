"""The ``neuflow`` command."""

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


class UsageError(Exception):
    """A bad argument or input: reported on one line, exit code 2."""


def _writing(path, write):
    """``write()`` an output file; a file-system error is a UsageError naming ``path``."""
    try:
        return write()
    except OSError as exc:
        raise UsageError(f"{exc.filename or path}: cannot write ({exc.strerror or exc})") from None


def _unit(args):
    from neuflow_hdl.alu import StreamALU
    from neuflow_hdl.convolver import Convolver
    from neuflow_hdl.fifo_bank import FifoBank
    from neuflow_hdl.mapper import Mapper
    try:
        return {
            "convolver": lambda: Convolver(kernel=args.kernel, max_width=args.max_width),
            "alu": lambda: StreamALU(),
            "mapper": lambda: Mapper(segments=args.segments),
            "fifo-bank": lambda: FifoBank(count=args.count, depth=args.depth),
        }[args.unit]()
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{args.unit}: {exc}") from None


def _grid_config(name):
    from neuflow_hdl.presets import preset
    try:
        return preset(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_verilog(args):
    from amaranth.back import verilog
    if (args.grid is None) == (args.unit is None):
        raise UsageError("give either --grid PRESET or --unit UNIT")
    if args.grid is not None:
        from neuflow_hdl.grid import Grid
        unit = Grid(_grid_config(args.grid))
        name = args.name or "grid"
    else:
        unit = _unit(args)
        name = args.name or args.unit.replace("-", "_")
    text = verilog.convert(unit, name=name, emit_src=False)
    out = Path(args.output)
    _writing(out, lambda: (out.parent.mkdir(parents=True, exist_ok=True), out.write_text(text)))
    print(f"wrote {out} ({name}, {len(text.splitlines())} lines)")


def cmd_synth(args):
    from boards.synth import DEVICE, TIMING_TARGET_MHZ, main as synth, main_unit
    if (args.grid is None) == (args.unit is None):
        raise UsageError("give either --grid PRESET or --unit UNIT")
    limit = {} if args.route_minutes is None else {"route_minutes": args.route_minutes}
    if args.grid is not None:
        config = _grid_config(args.grid)
        print(f"synth: grid {args.grid}: {config.rows} x {config.columns} tiles, K = {config.kernel}, "
              f"{config.multipliers} multipliers, timed at {TIMING_TARGET_MHZ} MHz")
        run, what = lambda: synth(args.grid, args.build_dir, seeds=args.seeds, **limit), f"grid {args.grid}"
    else:
        unit, name = _unit(args), args.unit.replace("-", "_")
        print(f"synth: {args.unit} alone, timed at {TIMING_TARGET_MHZ} MHz")
        run, what = lambda: main_unit(unit, name, args.build_dir, seeds=args.seeds, **limit), args.unit
    try:
        results = run()
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    if not results[0].fits():
        raise UsageError(f"{what} does not fit the {DEVICE['name']}")


def cmd_board_bitstream(args):
    from boards.synth import write_reports
    from boards.ulx3s import bitstream
    from neuflow_hdl.presets import board
    try:
        spec = board(args.board)
        reports, bit = bitstream(args.board, args.build_dir, seeds=args.seeds, route_minutes=args.route_minutes)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None
    write_reports(reports, Path(args.build_dir) / args.board)
    if not reports[0].fits():
        raise UsageError(f"{args.board}: the design does not fit the device; no bitstream")
    routed = [r for r in reports if r.routed]
    if not routed:
        raise UsageError(f"{args.board}: not routed within {args.route_minutes} minutes; no bitstream")
    if bit is None:
        fastest = max(routed, key=lambda r: r.fmax_mhz)
        raise UsageError(f"{args.board}: routed at {fastest.fmax_mhz} MHz at best (seed {fastest.seed}), below "
                         f"the board's {spec.clock_mhz:g} MHz clock; no bitstream (try more placer seeds, "
                         f"SEEDS=1,2,3)")
    print(f"wrote {bit} ({bit.stat().st_size:,} bytes)")


def _read_image(path):
    import numpy as np
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    try:
        if path.suffix == ".npy":
            return np.load(path).astype(np.int64).ravel()
        return np.array([int(word, 16) for word in path.read_text().split()
                         if not word.startswith("//")], dtype=np.int64)
    except ValueError as exc:
        raise UsageError(f"{path}: not a memory image (hex words, one per line, or .npy): {exc}") from None


def cmd_asm(args):
    from sim.golden.asm import AsmError, assemble, disassemble, to_words
    from neuflow_hdl.hexfile import write_hex
    source = Path(args.source)
    if not source.exists():
        raise UsageError(f"{source}: no such file")
    try:
        program = assemble(source.read_text())
    except AsmError as exc:
        raise UsageError(f"{source}: {exc}") from None
    _writing(args.output, lambda: write_hex(args.output, to_words(program)))
    print(f"wrote {args.output} ({len(program)} instructions, {4 * len(program)} words)")
    if args.listing:
        for n, word in enumerate(program):
            print(f"{n:5}  {word:016x}  {disassemble(word)}")


def cmd_run_image(args):
    from neuflow_hdl.hexfile import write_hex
    from sim.rtl.runner import run_image
    image = _read_image(args.image)
    _grid_config(args.grid)
    print(f"run-image: {args.image} ({len(image)} words) on grid {args.grid} (Verilator; the first "
          f"run of a grid builds it, a few minutes)", flush=True)
    try:
        result = run_image(image, args.grid, latency=args.latency, jitter=args.jitter,
                           max_cycles=args.max_cycles, trace=args.trace)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None
    if args.dump:
        _writing(args.dump, lambda: write_hex(args.dump, result.memory))
        print(f"memory written to {args.dump}")
    if not result.halted:
        raise UsageError(f"did not halt within {args.max_cycles} cycles")
    print(f"halted with code {result.halt_code:#x} after {result.cycles} cycles "
          f"({result.seconds:.2f} s of simulation, start-up included)")
    if args.trace:
        print(f"trace written to {args.trace}")
    return 0 if result.halt_code == 0 else 1


def cmd_fit_mapper(args):
    from neuflow_hdl.numerics import Format
    from sim.golden.mapper_fit import FUNCTIONS, fit
    if args.function not in FUNCTIONS:
        raise UsageError(f"unknown function {args.function!r}; known: {', '.join(sorted(FUNCTIONS))}")
    try:
        fmt = Format(args.width, args.frac)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result = fit(args.function, args.segments, fmt)
    print(f"{args.function}: {args.segments} segments, Q{fmt.width - fmt.frac}.{fmt.frac}, "
          f"symmetry {result.symmetry.name}, shift {result.shift}")
    print(f"{'segment':>7} {'bound':>8} {'slope':>8} {'offset':>8}   (codes; slope has "
          f"{result.shift} fraction bits)")
    for n, (b, a, c) in enumerate(zip(result.bounds, result.slopes, result.offsets)):
        print(f"{n:>7} {b:>8} {a:>8} {c:>8}")
    print(f"max error over all {1 << fmt.width} inputs: {result.max_error:.6f} "
          f"({result.max_error / fmt.step:.2f} LSB)")


def _load_array(path, what):
    import numpy as np
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UsageError(f"{what} {path}: not a .npy array ({type(exc).__name__})") from None


def _say(args):
    """A progress printer, silent with --quiet."""
    return (lambda text: None) if args.quiet else (lambda text: print(text, flush=True))


def cmd_compile(args):
    from compiler import CompileError
    from compiler.artefacts import write_outputs
    from compiler.pipeline import compile_model
    calibration = None if args.calibration is None else _load_array(args.calibration,
                                                                     "calibration")
    from sim.app.progress import layer_bar
    with layer_bar(quiet=args.quiet) as layer_done:
        try:
            compiled = compile_model(args.model, args.grid, calibration, input_range=args.input_range,
                                     progress=_say(args),
                                     layer_done=layer_done, reference=not args.no_reference)
            manifest = write_outputs(compiled, args.output)
        except CompileError as exc:
            raise UsageError(str(exc)) from None
    if args.quiet:
        return
    c = compiled.config
    total = manifest["estimated_cycles"]
    print(f"compiled {args.model} for grid {args.grid}: {len(compiled.layers)} layers, "
          f"{sum(len(l.passes) for l in compiled.layers)} passes, program "
          f"{manifest['program_words']} words, image {manifest['memory_words']} words")
    print(f"estimated {total} cycles per image = {c.clock_mhz * 1e6 / max(total, 1):.1f} "
          f"images/s at {c.clock_mhz:g} MHz; wrote {args.output}/ (image.npy, "
          f"{'image.hex, ' if (Path(args.output) / 'image.hex').exists() else ''}"
          f"manifest.json, program.s, report.md with cycles.png and roofline.png, states.json)")
    for row in compiled.errors:
        print(f"  {row['layer']:>24}: max |error| {row['max_abs']:.4g} (bound {row['bound']:.3g}), "
              f"SNR {row['snr_db']:.1f} dB")


def _print_cycles(manifest, layer_cycles, total, what):
    """Measured cycles per layer beside the estimates, and the total (``what`` it counts)."""
    print(f"{'layer':>28} {'cycles':>9} {'estimate':>9} {'error':>7}")
    for layer, cyc in zip(manifest["layers"], layer_cycles):
        est = layer["estimated_cycles"]
        print(f"{layer['index']:>3} {layer['name'][:24]:>24} {cyc:>9} {est:>9} "
              f"{100 * (est - cyc) / max(cyc, 1):>+6.1f}%")
    print(f"total {total} cycles per image ({what}) = "
          f"{manifest['clock_mhz'] * 1e6 / total:.1f} images/s at {manifest['clock_mhz']:g} MHz")


def _positive(text):
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _seeds(text):
    """argparse type: comma-separated placer seeds (whole numbers of at least 1)."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of distinct whole numbers of at least 1")
    return seeds


def _seconds(text):
    """argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def _magnitude(text):
    """argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number above 0")
    return value


def cmd_simulate(args):
    import numpy as np
    from compiler import CompileError
    from compiler.artefacts import as_batch, load_compiled
    from sim.app.progress import image_bar
    from sim.app.verify import verify
    x = _load_array(args.input, "input")
    if args.pieces and args.engine != "rtl":
        raise UsageError("--pieces runs on the RTL: add --engine rtl")
    if args.engine == "rtl" and not args.quiet:
        print("simulate: the first run on a grid builds its Verilator model (a few minutes)",
              flush=True)
    if args.pieces:
        return _simulate_pieces(args, x)
    try:
        manifest, image = load_compiled(args.directory)
        images = as_batch(x, manifest["input"]["onnx_shape"]).shape[0]
        with image_bar(images, quiet=args.quiet) as bar:
            result = verify(manifest, image, x, args.engine, progress=bar.update, trace=args.trace,
                            strict=args.strict, workers=args.jobs, dask=args.dask)
    except (CompileError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None
    _warn_saturation(result.saturation)
    if args.engine == "rtl":
        _report_checked(result, "hardware", "reset to halt", args.quiet)
    y = result.outputs
    _writing(args.output, lambda: np.save(args.output, y.astype(np.float32)))
    if not args.quiet:
        print(f"wrote {args.output} {tuple(y.shape)}")


def cmd_board_run(args):
    import numpy as np
    from boards.link import DEFAULT_BAUD
    from compiler import CompileError
    from compiler.artefacts import as_batch, load_compiled
    from sim.app.board_run import run_on_board
    from sim.app.progress import image_bar
    x = _load_array(args.input, "input")
    try:
        manifest, image = load_compiled(args.directory)
        images = as_batch(x, manifest["input"]["onnx_shape"]).shape[0]
        with image_bar(images, quiet=args.quiet) as bar:
            result = run_on_board(manifest, image, x, args.port, baud=args.baud or DEFAULT_BAUD,
                                  timeout=args.timeout, run_seconds=args.run_seconds, strict=args.strict,
                                  progress=bar.update)
    except (CompileError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None
    _warn_saturation(result.saturation)
    _report_checked(result, "the board", "start to halt", args.quiet)
    if args.output:
        y = result.outputs
        _writing(args.output, lambda: np.save(args.output, y.astype(np.float32)))
        if not args.quiet:
            print(f"wrote {args.output} {tuple(y.shape)}")


def cmd_board_status(args):
    from boards.link import DEFAULT_BAUD, BoardLink, LinkError
    try:
        with BoardLink(args.port, baud=args.baud or DEFAULT_BAUD, timeout=args.timeout) as link:
            status = link.status()
    except LinkError as exc:
        raise UsageError(str(exc)) from None
    grid = status.grid or f"unknown (identity {status.identity:#010x})"
    print(f"{args.port}: {status.state.name.lower()}, grid {grid}, {status.memory_words} memory words, "
          f"halt code {status.halt_code:#x}, cycle counter {status.cycles}")


def _report_checked(result, engine, counted, quiet):
    """A run checked against the reference engine: a mismatch is the error;
    otherwise the cycles per layer of the first image (``counted`` says from when)."""
    bad = result.first_mismatch
    if bad:
        raise UsageError(f"image {bad[0]}: {engine} differs from the reference: {bad[1]}")
    if not quiet:
        print(f"{engine} equals the reference engine bit for bit on every layer of {len(result.images)} image(s)")
        _print_cycles(result.manifest, result.images[0].layer_cycles, result.images[0].cycles, counted)


def _warn_saturation(saturated):
    if saturated:
        print(f"neuflow: warning: {saturated.describe()}; --strict makes this an error", file=sys.stderr)


def _simulate_pieces(args, x):
    """``simulate --pieces``: one image as independent pieces, one per resume point."""
    import numpy as np
    from compiler import CompileError
    from compiler.artefacts import as_batch
    from compiler.pieces import load_resumable
    from sim.app.partition import count_pieces, run_partitioned
    from sim.app.progress import image_bar
    from sim.app.verify import input_saturation
    try:
        net = load_resumable(args.directory)
        batch = as_batch(x, net.manifest["input"]["onnx_shape"])
        if batch.shape[0] != 1:
            raise CompileError(f"--pieces runs one image; {args.input} holds {batch.shape[0]}")
        saturated = input_saturation(batch, net.manifest, args.strict)
        with image_bar(count_pieces(net), quiet=args.quiet, unit="piece") as bar:
            run = run_partitioned(net, batch[0], workers=args.jobs, dask=args.dask, done=bar.update)
    except (CompileError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None
    _warn_saturation(saturated)
    bad = next((p.mismatch for p in run.pieces if p.mismatch), None)
    if bad:
        raise UsageError(f"hardware differs from the reference: {bad}")
    if not args.quiet:
        print(f"hardware equals the reference engine bit for bit after every one of "
              f"{len(run.pieces)} pieces ({run.seconds:.1f} s)")
        _print_cycles(net.manifest, run.layer_cycles, run.cycles, "the layers' sum")
    y = run.output(net.manifest)[None]
    _writing(args.output, lambda: np.save(args.output, y.astype(np.float32)))
    if not args.quiet:
        print(f"wrote {args.output} {tuple(y.shape)}")


def cmd_sweep(args):
    import json
    from neuflow_hdl.presets import PRESETS
    from sim.app.progress import image_bar
    from sim.app.sweep import sweep
    grids = [g.strip() for g in args.grids.split(",") if g.strip()]
    unknown = [g for g in grids if g not in PRESETS]
    if unknown or not grids:
        raise UsageError(f"--grids {args.grids}: {', '.join(unknown) or 'none given'} is not a preset "
                         f"({', '.join(PRESETS)})")
    from compiler import CompileError
    from compiler.frontend import load_model
    models = {}
    for model in args.models:
        path = Path(model)
        if path.stem in models:
            raise UsageError(f"{model}: two models are called {path.stem}")
        try:
            models[path.stem] = load_model(path).SerializeToString()
        except CompileError as exc:
            raise UsageError(str(exc)) from None
    if not args.quiet:
        print("sweep: the first run on a grid builds its Verilator model (a few minutes)", flush=True)
    try:
        with image_bar(len(models) * len(grids), quiet=args.quiet, unit="point") as bar:
            points = sweep(models, grids, seed=args.seed, workers=args.jobs, dask=args.dask, done=bar.update)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        _writing(args.json, lambda: Path(args.json).write_text(
            json.dumps([p.as_json() for p in points], indent=1) + "\n"))
    if not args.quiet:
        _print_sweep(points)
    bad = next((p for p in points if p.mismatch), None)
    if bad:
        raise UsageError(f"{bad.model} on {bad.grid}: hardware differs from the reference: {bad.mismatch}")
    if not any(p.ran for p in points):
        raise UsageError("no design point compiled: " + "; ".join(f"{p.model} on {p.grid}: {p.refused}"
                                                                  for p in points))


def _print_sweep(points):
    print(f"{'model':<16} {'grid':<11} {'cycles':>11} {'estimate off':>12} {'frames/s':>9} {'MHz':>5} "
          f"{'MACs/cycle':>10} {'use':>5} {'sim s':>6}  bit-exact")
    for p in points:
        if not p.ran:
            print(f"{p.model[:16]:<16} {p.grid:<11} refused: {p.refused}")
            continue
        print(f"{p.model[:16]:<16} {p.grid:<11} {p.cycles:>11,} {100 * p.estimate_off:>+11.1f}% "
              f"{p.frames_per_second:>9.1f} {p.clock_mhz:>5g} {p.macs / max(p.cycles, 1):>10.1f} "
              f"{100 * p.utilisation:>4.0f}% {p.seconds:>6.1f}  {p.mismatch is None}")
    print("(cycles: measured on the RTL, reset to halt; estimate off: the compiler's layer cycles against "
          "the measured ones; use: useful MACs per cycle over the convolver MACs; sim s: compile and "
          "simulation of the point)")


def _grid_help():
    from neuflow_hdl.presets import PRESETS
    sizes = ", ".join(f"{name} ({c.rows}x{c.columns} tiles, K={c.kernel}, {c.multipliers} multipliers)"
                      for name, c in PRESETS.items())
    return f"grid preset: {sizes}"


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="print only errors and results")
    common.add_argument("--debug", action="store_true",
                        help="on an unexpected failure, show the Python traceback")
    parser = argparse.ArgumentParser(
        prog="neuflow", description="NeuFlow re-made in Python: compile ONNX networks for the grid, "
        "run them on the reference engine or the RTL, write and build the hardware.",
        epilog="Every command takes --help, -q/--quiet and --debug.  Exit 0 on success, 2 with "
               "one line on bad input, 1 with one line if something unexpected escapes.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    grid = _grid_help()

    units = argparse.ArgumentParser(add_help=False)
    units.add_argument("--grid", help=grid + " (or give --unit)")
    units.add_argument("--unit", choices=["convolver", "alu", "mapper", "fifo-bank"],
                       help="one tile operator instead of a grid")
    units.add_argument("--kernel", type=int, default=7, help="convolver: largest kernel K (default 7)")
    units.add_argument("--max-width", type=int, default=512, help="convolver: longest row (default 512)")
    units.add_argument("--segments", type=int, default=8, help="mapper: segments (default 8)")
    units.add_argument("--count", type=int, default=4, help="fifo-bank: FIFOs (default 4)")
    units.add_argument("--depth", type=int, default=512, help="fifo-bank: words per FIFO (default 512)")

    p = sub.add_parser("verilog", parents=[common, units],
                       help="write Verilog for a grid preset or one tile operator")
    p.add_argument("--name", help="Verilog module name (default: grid, or the unit's name)")
    p.add_argument("-o", "--output", required=True, help="Verilog file to write")
    p.set_defaults(func=cmd_verilog)

    p = sub.add_parser("synth", parents=[common, units],
                       help="synthesize, place and route a grid (or one tile operator) for the LFE5U-85F (YoWASP)")
    p.add_argument("--build-dir", default="build/synth", help="folder for the netlists and reports")
    p.add_argument("--seeds", type=_seeds, default=(1,),
                   help="placer seeds, comma-separated (default 1); two place and route at once, and "
                        "the fmax over them is printed as min / median / max")
    p.add_argument("--route-minutes", type=float,
                   help="stop routing after this many minutes (default: boards/synth.py ROUTE_MINUTES) and "
                        "report the placement's fmax estimate")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("asm", parents=[common], help="assemble a control program into a memory image")
    p.add_argument("source", help="assembly source (docs/isa.md)")
    p.add_argument("-o", "--output", required=True, help="image file (hex words, one per line)")
    p.add_argument("--listing", action="store_true", help="print the disassembly")
    p.set_defaults(func=cmd_asm)

    p = sub.add_parser("run-image", parents=[common],
                       help="run a memory image on the simulated processor to halt")
    p.add_argument("image", help="hex words, one per line, or a .npy array")
    p.add_argument("--grid", default="tiny", help=grid + " (default tiny)")
    p.add_argument("--trace", help="write a waveform of the run (FILE.fst)")
    p.add_argument("--dump", help="write memory after halt (hex words)")
    p.add_argument("--latency", type=int, default=2, help="memory read latency, cycles (default 2)")
    p.add_argument("--jitter", type=int, default=0, help="extra random read latency, 0 .. J cycles")
    p.add_argument("--max-cycles", type=int, default=50_000_000,
                   help="give up after this many cycles (default 50,000,000)")
    p.set_defaults(func=cmd_run_image)

    p = sub.add_parser("compile", parents=[common],
                       help="compile an ONNX network into a program and memory image")
    p.add_argument("model", help="ONNX file")
    p.add_argument("--grid", default="tiny", help=grid + " (default tiny)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--calibration", help=".npy array of inputs (N, ...) for per-layer formats")
    p.add_argument("--input-range", type=_magnitude, metavar="R",
                   help="the largest |value| the network's inputs take; the error bounds hold for "
                        "inputs within ±R (default: the calibration's largest, else the input "
                        "format's range)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the reference run that measures the error against onnxruntime")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("simulate", parents=[common], help="run a compiled network on an engine")
    p.add_argument("directory", help="output directory of neuflow compile")
    p.add_argument("--input", required=True, help=".npy input shaped like the ONNX input")
    p.add_argument("--output", required=True, help=".npy file for the network's output")
    p.add_argument("--engine", choices=["reference", "rtl"], default="reference",
                   help="reference: the reference engine; rtl: the processor on Verilator, checked "
                        "layer by layer against the reference, with measured cycles")
    p.add_argument("--trace", help="rtl: waveform of the first image (FILE.fst)")
    p.add_argument("--strict", action="store_true",
                   help="input values outside the input format's range, or outside the range "
                        "the error bounds hold for, are an error (by default they are counted in "
                        "a warning)")
    p.add_argument("--pieces", action="store_true",
                   help="rtl: run one image as independent pieces (each layer, and runs of passes "
                        "inside long layers; each from the reference engine's checkpoint, checked bit "
                        "for bit), in parallel")
    p.add_argument("--jobs", type=_positive, default=None,
                   help="images (or pieces) simulated at once on this machine (default: one per "
                        "core on rtl)")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run the images (or pieces) on this Dask scheduler (tcp://host:port) instead; "
                        "needs pip install 'neuflow[dask]'")
    p.set_defaults(func=cmd_simulate)

    board = sub.add_parser("board", help="a board through its host link (docs/hostlink.md)")
    boards = board.add_subparsers(dest="board_command", required=True, metavar="COMMAND")
    link = argparse.ArgumentParser(add_help=False)
    link.add_argument("--port", required=True,
                      help="the board's serial port (/dev/ttyUSB0) or a pyserial URL (socket://host:port)")
    link.add_argument("--baud", type=_positive, help="line rate (default: the board top's, 1000000)")
    link.add_argument("--timeout", type=_seconds, default=5.0, help="seconds a reply may take (default 5)")
    p = boards.add_parser("run", parents=[common, link],
                          help="send a compiled network, run it, read the output and the cycle stamps back")
    p.add_argument("directory", help="output directory of neuflow compile")
    p.add_argument("--input", required=True, help=".npy input shaped like the ONNX input")
    p.add_argument("--output", help=".npy file for the network's output")
    p.add_argument("--run-seconds", type=_seconds, default=60.0, help="seconds a run may take (default 60)")
    p.add_argument("--strict", action="store_true", help="input values that saturate are an error")
    p.set_defaults(func=cmd_board_run)
    p = boards.add_parser("status", parents=[common, link], help="the board's run state, grid and memory")
    p.set_defaults(func=cmd_board_status)
    p = boards.add_parser("bitstream", parents=[common],
                          help="build the board's bitstream with the open flow (YoWASP: yosys, nextpnr, ecppack)")
    p.add_argument("--board", default="ulx3s-85f", help="the board (default ulx3s-85f)")
    p.add_argument("--build-dir", default="build/bitstream", help="folder for the netlists, reports and .bit")
    p.add_argument("--seeds", type=_seeds, default=(1,),
                   help="placer seeds, comma-separated (default 1); two place and route at once, the "
                        "fastest routed one is packed if it meets the board's clock")
    p.add_argument("--route-minutes", type=_positive, default=60,
                   help="stop routing after this many minutes (default 60)")
    p.set_defaults(func=cmd_board_bitstream)

    p = sub.add_parser("sweep", parents=[common],
                       help="compile networks for grid presets and run every pair on the RTL")
    p.add_argument("models", nargs="+", metavar="MODEL", help="ONNX files")
    p.add_argument("--grids", default="tiny", help="comma-separated grid presets (default tiny): " + grid)
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    p.add_argument("--json", help="write the points to this JSON file")
    p.add_argument("--jobs", type=_positive, default=None,
                   help="design points run at once on this machine (default: one per core)")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run the points on this Dask scheduler (tcp://host:port) instead; needs "
                        "pip install 'neuflow[dask]'")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("fit-mapper", parents=[common],
                       help="fit the piecewise-linear mapper to a function")
    p.add_argument("function", help="tanh, sigmoid, ... (the fitter's known functions)")
    p.add_argument("--segments", type=int, default=8, help="mapper segments (default 8)")
    p.add_argument("--width", type=int, default=16, help="word width (default 16)")
    p.add_argument("--frac", type=int, default=8, help="fraction bits (default 8)")
    p.set_defaults(func=cmd_fit_mapper)
    return parser


def main(argv=None):
    """The ``neuflow`` command: exit 0 on success, 2 with one line on bad input,
    1 with one line (and, with --debug, the traceback) on anything unexpected."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UsageError as exc:
        print(f"neuflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neuflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:            # a bug: one line, the traceback only when asked for
        if args.debug:
            raise
        detail = str(exc).splitlines()[0] if str(exc) else ""
        print(f"neuflow: internal error: {type(exc).__name__}: {detail} (rerun with --debug "
              "for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
