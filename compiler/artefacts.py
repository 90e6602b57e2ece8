"""Compiled artefacts: the typed result of a compile, the files it writes
(image, manifest, listing, report) and the functions that read a compiled
network's memory back (its input, its output, every layer's tensor, the
cycle stamps)."""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuflow_hdl.hexfile import write_hex
from neuflow_hdl.numerics import Format, unsigned_words, wrap_signed

from .cost import pass_cycles
from .errors import CompileError
from .ir import printable
from .layout import Buffer, stamp_address

__all__ = ["Layer", "Compiled", "Accuracy", "write_outputs", "load_compiled", "as_batch", "input_image",
           "tensor_codes", "read_output", "layer_cycles", "stamp_values", "first_mismatch", "report", "saturation"]


@dataclass(frozen=True, eq=False)
class Layer:
    """One IR node compiled: its passes and what the report needs."""
    name: str
    op: str                         #: the ONNX operator
    output: str                     #: the output tensor (a buffer)
    onnx_output: str                #: the ONNX tensor it stands for, or None (an internal step)
    shape: tuple
    passes: tuple
    macs: int
    notes: tuple
    pass_costs: tuple               #: each pass's :class:`~compiler.cost.PassCost` as emitted
    error_bound: float

    @property
    def pass_cycles(self):
        """Estimated cycles per pass (:func:`compiler.cost.pass_cycles`)."""
        return tuple(pass_cycles(c) for c in self.pass_costs)

    @property
    def cycles(self):
        return sum(self.pass_cycles)


@dataclass(frozen=True)
class Accuracy:
    """Per-layer error of the reference engine against onnxruntime on one input."""
    rows: tuple                     #: {layer, max_abs, snr_db, bound, saturates}
    input: str                      #: which input, or why nothing was measured


@dataclass(frozen=True, eq=False)
class Compiled:
    """A compiled network: what ``neuflow compile`` writes."""
    grid: str
    config: object
    graph: object
    buffers: dict
    layers: tuple
    source: str
    image: np.ndarray               #: memory image without an input (pads, weights, program)
    stamps: int                     #: address of the cycle-stamp table
    program_words: int
    points: tuple = ()              #: where the program can be resumed (:mod:`compiler.pieces`)
    input_range: float = None       #: the inputs' largest magnitude the error bounds assume
    seconds: float = 0.0
    accuracy: Accuracy = field(default=None)

    @property
    def bounded_range(self):
        """The inputs' largest magnitude the error bounds hold for."""
        if self.input_range is not None:
            return self.input_range
        return self.config.fmt.span(self.buffers[self.graph.input].frac)

    @property
    def errors(self):
        return list(self.accuracy.rows) if self.accuracy else []

    def manifest(self):
        c = self.config
        buffers = {t: {"base": b.base, "shape": [b.channels, b.height, b.width], "pads": list(b.pads),
                       "pad_value": b.pad_value, "frac": b.frac, "words": b.size}
                   for t, b in self.buffers.items()}
        g = self.graph
        return {
            "grid": self.grid,
            "format": {"width": c.fmt.width},
            "clock_mhz": c.clock_mhz,
            "multipliers": c.multipliers,
            "memory_words": int(len(self.image)),
            "program_words": int(self.program_words),
            "stamps": self.stamps,
            "input": {"tensor": g.input, "onnx_name": g.input_name,
                      "onnx_shape": list(g.input_shape), "range": self.bounded_range,
                      **buffers[g.input]},
            "output": {"tensor": g.output, "onnx_name": g.output_name,
                       "onnx_shape": list(g.output_shape), "host_softmax": g.host_softmax,
                       **buffers[g.output]},
            "buffers": buffers,
            "layers": [{"index": n, "name": l.name, "op": l.op, "output": l.output,
                        "onnx_output": l.onnx_output, "shape": list(l.shape),
                        "passes": len(l.passes), "macs": int(l.macs),
                        "estimated_cycles": int(l.cycles),
                        "pass_cycles": [int(x) for x in l.pass_cycles],
                        "error_bound": l.error_bound, "notes": list(l.notes)}
                       for n, l in enumerate(self.layers)],
            "estimated_cycles": int(sum(l.cycles for l in self.layers)),
        }


def as_batch(x, onnx_shape, what="input"):
    """``x`` as a float batch (N, ...) of inputs shaped like ``onnx_shape`` (one
    input without N is a batch of one).  CompileError naming ``what`` and the
    limit for anything else: a shape the model does not take, an empty batch,
    values that are not real numbers (complex, strings, objects) or not finite."""
    x = np.asarray(x)
    if x.dtype.kind not in "iuf":
        raise CompileError(f"{what}: an array of {x.dtype} values; the model takes real numbers "
                           "(integer or floating point)")
    x = x.astype(np.float64)
    want = tuple(onnx_shape[1:])
    if x.ndim == len(want):
        x = x[None]
    if tuple(x.shape[1:]) != want:
        raise CompileError(f"{what} of shape {tuple(x.shape)}; the model takes (N, "
                           f"{', '.join(str(d) for d in want)})")
    if x.shape[0] == 0:
        raise CompileError(f"{what} of shape {tuple(x.shape)}: an empty batch (N = 0)")
    bad = np.size(x) - int(np.count_nonzero(np.isfinite(x)))
    if bad:
        raise CompileError(f"{what}: {bad} of {x.size} values are NaN or infinite")
    return x


def saturation(x, manifest):
    """``(saturating, outside, largest magnitude, lowest, highest, bounded)``:
    how many values of the float batch ``x`` saturate when quantised into the
    input's format, how many lie outside the range ``±bounded`` the error
    bounds were computed for, and that format's range."""
    fmt = Format(manifest["format"]["width"], manifest["input"]["frac"])
    bounded = manifest["input"].get("range", fmt.span())
    if isinstance(bounded, bool) or not isinstance(bounded, (int, float)) or not 0 < bounded < math.inf:
        raise CompileError(f"manifest.json: the input's range {bounded!r} is not a positive number; "
                           "compile again")
    saturated = int(np.count_nonzero(fmt.saturated(x)))
    outside = int(np.count_nonzero(np.abs(x) > bounded)) if bounded < fmt.span() else 0
    return (saturated, outside, float(np.max(np.abs(x))), fmt.dequantise(fmt.min),
            fmt.dequantise(fmt.max), float(bounded))


def _buffer(spec):
    """The :class:`~compiler.layout.Buffer` a manifest entry describes."""
    return Buffer(spec.get("tensor", ""), *spec["shape"], spec["frac"], tuple(spec["pads"]),
                  spec["pad_value"], base=spec["base"])


def input_image(image, manifest, x):
    """The memory image with one input (float, per-image shape) quantised into it."""
    spec = manifest["input"]
    buf = _buffer(spec)
    width = manifest["format"]["width"]
    codes = Format(width).quantise(np.reshape(x, spec["shape"]), spec["frac"])
    image = np.array(image, dtype=np.int64)
    words = buf.scatter(codes)
    image[buf.base:buf.base + len(words)] = unsigned_words(words, width)
    return image


def tensor_codes(memory, spec, width=16):
    """Signed codes (C, H, W) of a buffer described by a manifest entry."""
    buf = _buffer(spec)
    words = np.asarray(memory[buf.base:buf.base + buf.size], dtype=np.int64)
    codes = wrap_signed(words, width)
    return buf.gather(codes)


def first_mismatch(reference, got, manifest):
    """The first differing layer / map / pixel between two memories after a
    run of the same image, or None: how hardware is checked against the
    reference engine."""
    for layer in manifest["layers"]:
        spec = manifest["buffers"][layer["output"]]
        a, b = tensor_codes(reference, spec), tensor_codes(got, spec)
        diff = (a != b)
        if diff.any():
            c, y, x = (int(v) for v in np.argwhere(diff)[0])
            return (f"layer {layer['index']} ({layer['name']}): map {c}, pixel (row {y}, column "
                    f"{x}): expected {a[c, y, x]}, got {b[c, y, x]} "
                    f"({int(diff.sum())} of {diff.size} words differ)")
    return None


def read_output(memory, manifest):
    """The network's float output for one image (ONNX output shape without N)."""
    spec = manifest["output"]
    y = tensor_codes(memory, spec, manifest["format"]["width"]) * 2.0 ** -spec["frac"]
    y = y.reshape(spec["shape"][0] * spec["shape"][1] * spec["shape"][2])
    if spec["host_softmax"]:
        e = np.exp(y - y.max())
        y = e / e.sum()
    return y.reshape(tuple(spec["onnx_shape"][1:]))


def layer_cycles(memory, manifest):
    """Cycles per layer from the program's cycle stamps."""
    stamps = manifest["stamps"]
    n = len(manifest["layers"])
    values = stamp_values(memory, stamps, 0, n + 1)
    return [values[i + 1] - values[i] for i in range(n)]


def stamp_values(memory, stamps, first, stop):
    """The cycle counter the program stored at slots ``first .. stop - 1`` of
    the stamp table at ``stamps`` (:func:`~compiler.layout.stamp_address`)."""
    return [int(memory[a]) | int(memory[a + 1]) << 16
            for a in (stamp_address(stamps, i) for i in range(first, stop))]


#: The report's pictures (:mod:`compiler.charts`), written beside it.
CYCLES_CHART, ROOFLINE_CHART = "cycles.png", "roofline.png"
#: The program's resume points (:class:`~compiler.codegen.ResumePoint`), for :mod:`compiler.pieces`.
STATES = "states.json"
#: The program's assembly listing.
PROGRAM = "program.s"
#: ``image.hex`` (five bytes a word, for ``$readmemh``) is written for images of
#: at most this many words; ``image.npy`` (two bytes a word) always.
HEX_MAX_WORDS = 1 << 22


def write_outputs(compiled, outdir):
    """image.npy, image.hex (up to :data:`HEX_MAX_WORDS` words), manifest.json,
    program.s (listing), report.md and its two pictures, and states.json (the
    program's resume points, for partitioned runs: :mod:`compiler.pieces`) in
    ``outdir``."""
    out = Path(outdir)
    manifest = compiled.manifest()
    try:
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "image.npy", compiled.image.astype(np.uint16))
        if len(compiled.image) <= HEX_MAX_WORDS:
            write_hex(out / "image.hex", compiled.image, compiled.config.fmt.width)
        else:
            (out / "image.hex").unlink(missing_ok=True)         # never a stale one beside the new image
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=_json))
        (out / PROGRAM).write_text(compiled.source)
        (out / "report.md").write_text(report(compiled, manifest))
        (out / STATES).write_text(json.dumps([point.to_json() for point in compiled.points]))
        write_charts(compiled, out, f"{out.name} on {compiled.grid}")
    except OSError as exc:
        raise CompileError(f"{exc.filename or out}: cannot write the compiled network "
                           f"({exc.strerror or exc})") from None
    return manifest


def write_charts(compiled, out, title):
    """The report's two pictures of ``compiled`` in the folder ``out``."""
    from .charts import cycles_chart, roofline_chart
    cycles_chart(compiled.layers, compiled.config, Path(out) / CYCLES_CHART,
                 f"Where the cycles go: {title}")
    roofline_chart(compiled.layers, compiled.config, Path(out) / ROOFLINE_CHART,
                   f"Against the grid's limits: {title}")


def _where_the_cycles_go(compiled):
    """The report's table: each layer's MAC slots by cause (:mod:`compiler.utilisation`)."""
    from .utilisation import CAUSES, layer_split
    c = compiled.config
    slots = c.convolver_macs
    lines = ["", "## Where the cycles go", "",
             f"Each layer's convolver MAC slots ({slots} a cycle: {c.tiles} tiles of {c.kernel} x "
             f"{c.kernel}) by cause, as shares of its estimated cycles (the causes follow the cost "
             f"model term by term; see `compiler/utilisation.py`).", "",
             f"![cycles per layer by cause]({CYCLES_CHART}) ![each layer against the MAC and "
             f"memory-bus bounds]({ROOFLINE_CHART})", "",
             "| layer | cycles | " + " | ".join(CAUSES) + " |",
             "| --- | --- | " + " | ".join("---" for _ in CAUSES) + " |"]
    total = dict.fromkeys(CAUSES, 0)
    for layer in compiled.layers:
        split = layer_split(layer, c)
        for cause in CAUSES:
            total[cause] += split[cause]
        whole = max(sum(split.values()), 1)
        lines.append(f"| {_cell(layer.name)} | {layer.cycles} | " +
                     " | ".join(f"{100 * split[cause] / whole:.1f}%" for cause in CAUSES) + " |")
    whole = max(sum(total.values()), 1)
    lines.append(f"| **all** | {sum(l.cycles for l in compiled.layers)} | " +
                 " | ".join(f"{100 * total[cause] / whole:.1f}%" for cause in CAUSES) + " |")
    return lines


def _json(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)


def _cell(text):
    """``text`` (a name from the model) as one Markdown table cell: control and
    other non-printable characters escaped, ``|`` escaped."""
    return printable(text).replace("|", "\\|")


def report(compiled, manifest):
    c = compiled.config
    lines = [f"# NeuFlow compile report: grid `{compiled.grid}`", "",
             f"{c.rows} x {c.columns} tiles, K = {c.kernel}, {c.multipliers} multipliers, "
             f"{c.clock_mhz:g} MHz nominal; {c.ports} streamer ports, {c.globals_} global lines.",
             "",
             f"Memory: program {manifest['program_words']} words, image {manifest['memory_words']} "
             f"words.  Compile time {compiled.seconds:.2f} s.", ""]
    total = manifest["estimated_cycles"]
    macs = sum(l["macs"] for l in manifest["layers"])
    fps = c.clock_mhz * 1e6 / max(total, 1)
    lines += [f"Estimated: **{total} cycles per image, {fps:.1f} images/s at {c.clock_mhz:g} MHz**; "
              f"{macs} MACs, {macs / max(total, 1):.1f} MACs/cycle "
              f"({100 * macs / max(total, 1) / c.multipliers:.1f}% of the grid's "
              f"{c.multipliers}).", ""]
    lines += ["| # | layer | op | output | passes | MACs | est. cycles | MAC util. | error bound |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for l in manifest["layers"]:
        util = l["macs"] / max(l["estimated_cycles"], 1) / c.multipliers
        lines.append(f"| {l['index']} | {_cell(l['name'])} | {l['op']} | {'x'.join(map(str, l['shape']))} "
                     f"| {l['passes']} | {l['macs']} | {l['estimated_cycles']} | {100 * util:.1f}% "
                     f"| {l['error_bound']:.3g} |")
    lines += _where_the_cycles_go(compiled)
    notes = [f"- {_cell(l['name'])}: {n}" for l in manifest["layers"] for n in l["notes"]]
    if notes:
        lines += ["", "Notes:", ""] + notes
    if manifest["output"]["host_softmax"]:
        lines += ["", "The final Softmax runs on the host (`neuflow simulate` applies it)."]
    if compiled.accuracy is not None:
        lines += ["", f"## Error against onnxruntime ({compiled.accuracy.input})", "",
                  "| layer | max abs error | SNR (dB) | bound | saturates |",
                  "| --- | --- | --- | --- | --- |"]
        for r in compiled.errors:
            lines.append(f"| {_cell(r['layer'])} | {r['max_abs']:.4g} | {r['snr_db']:.1f} | "
                         f"{r['bound']:.3g} | {'yes' if r['saturates'] else 'no'} |")
    return "\n".join(lines) + "\n"


#: What :func:`load_compiled` needs of a manifest.
MANIFEST_KEYS = ("grid", "format", "stamps", "input", "output", "buffers", "layers")


def load_compiled(directory):
    """``(manifest, image)`` of a compiled directory; CompileError naming the file
    when either is missing, truncated or edited out of shape."""
    d = Path(directory)
    if not (d / "manifest.json").is_file() or not (d / "image.npy").is_file():
        raise CompileError(f"{d}: not a compiled directory (no manifest.json / image.npy); run "
                           "neuflow compile first")
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CompileError(f"{d / 'manifest.json'}: not valid JSON ({exc}); compile again") from None
    missing = [k for k in MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise CompileError(f"{d / 'manifest.json'}: no {', '.join(missing)}; compile again")
    try:
        image = np.load(d / "image.npy", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CompileError(f"{d / 'image.npy'}: not a memory image ({exc}); compile again") from None
    if image.ndim != 1 or image.dtype.kind not in "iu":
        raise CompileError(f"{d / 'image.npy'}: a {image.ndim}-D {image.dtype} array, not a memory "
                           "image; compile again")
    return manifest, image.astype(np.int64)
