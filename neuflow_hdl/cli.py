"""The ``neuflow`` command."""

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


class UsageError(Exception):
    """A bad argument or input: reported on one line, exit code 2."""


def _unit(args):
    from .alu import StreamALU
    from .convolver import Convolver
    from .fifo_bank import FifoBank
    from .mapper import Mapper
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
    from .presets import preset
    try:
        return preset(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_verilog(args):
    from amaranth.back import verilog
    if (args.grid is None) == (args.unit is None):
        raise UsageError("give either --grid PRESET or --unit UNIT")
    if args.grid is not None:
        from .grid import Grid
        unit = Grid(_grid_config(args.grid))
        name = args.name or "grid"
    else:
        unit = _unit(args)
        name = args.name or args.unit.replace("-", "_")
    text = verilog.convert(unit, name=name, emit_src=False)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} ({name}, {len(text.splitlines())} lines)")


def cmd_synth(args):
    from boards.synth import DEVICE, main as synth
    config = _grid_config(args.grid)
    print(f"synth: grid {args.grid}: {config.rows} x {config.columns} tiles, K = {config.kernel}, "
          f"{config.multipliers} multipliers")
    try:
        result = synth(args.grid, args.build_dir)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    if not result.fits():
        raise UsageError(f"grid {args.grid} does not fit the {DEVICE['name']}")


def cmd_fit_mapper(args):
    from .numerics import Format
    from sim.mapper_fit import FUNCTIONS, fit
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


def build_parser():
    parser = argparse.ArgumentParser(prog="neuflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("verilog", help="write Verilog for a grid preset or one tile operator")
    p.add_argument("--grid", help="grid preset (tiny, ulx3s-85f, neuflow-v6)")
    p.add_argument("--unit", choices=["convolver", "alu", "mapper", "fifo-bank"])
    p.add_argument("--kernel", type=int, default=7, help="convolver: largest kernel K")
    p.add_argument("--max-width", type=int, default=512, help="convolver: longest row")
    p.add_argument("--segments", type=int, default=8, help="mapper: segments")
    p.add_argument("--count", type=int, default=4, help="fifo-bank: FIFOs")
    p.add_argument("--depth", type=int, default=512, help="fifo-bank: words per FIFO")
    p.add_argument("--name", help="Verilog module name")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_verilog)

    p = sub.add_parser("synth", help="synthesize and place a grid for the LFE5U-85F (YoWASP)")
    p.add_argument("--grid", required=True)
    p.add_argument("--build-dir", default="build/synth")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("fit-mapper", help="fit the piecewise-linear mapper to a function")
    p.add_argument("function")
    p.add_argument("--segments", type=int, default=8)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--frac", type=int, default=8)
    p.set_defaults(func=cmd_fit_mapper)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UsageError as exc:
        print(f"neuflow: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
