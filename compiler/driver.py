"""The compiler driver: ONNX file -> program, memory image, manifest, report;
and the ``simulate`` side that runs a compiled directory on an engine."""

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuflow_hdl.numerics import Format, wrap_signed
from neuflow_hdl.presets import preset
from sim.asm import assemble, to_words

from . import codegen as cg
from .codegen import CodeGen
from .errors import CompileError
from .frontend import load_model, to_graph
from .passes import run_passes
from .quantise import assign_formats, mapper_for
from .schedule import (ConvJob, Layer, allocate, avgpool_weight, chunk_side, conv_packings,
                       conv_passes, kernel_pieces, lower_node, pass_summary, plan_buffers,
                       stream_passes)

__all__ = ["Compiled", "compile_model", "estimate_model", "write_outputs", "load_compiled", "input_image",
           "read_output", "first_mismatch", "layer_cycles", "simulate"]

DATA_BASE = 0x1000          # first try for the tensors (moved up when the program is longer)
ALIGN = 64


@dataclass
class Compiled:
    grid: str
    config: object
    graph: object
    buffers: dict
    layers: list
    source: str
    image: np.ndarray               #: memory image without an input (pads, weights, program)
    stamps: int
    seconds: float = 0.0
    errors: list = field(default_factory=list)      #: per-layer error rows, when measured
    reference_input: str = ""

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
                      "onnx_shape": list(g.input_shape), **buffers[g.input]},
            "output": {"tensor": g.output, "onnx_name": g.output_name,
                       "onnx_shape": list(g.output_shape), "host_softmax": g.host_softmax,
                       **buffers[g.output]},
            "buffers": buffers,
            "layers": [{"index": n, "name": l.name, "op": l.op, "output": l.output,
                        "onnx_output": l.onnx_output, "shape": list(l.shape),
                        "passes": len(l.passes), "macs": int(l.macs),
                        "estimated_cycles": int(l.cycles),
                        "pass_cycles": [int(x) for x in l.pass_cycles],
                        "error_bound": l.error_bound, "notes": l.notes}
                       for n, l in enumerate(self.layers)],
            "estimated_cycles": int(sum(l.cycles for l in self.layers)),
        }


def _static_estimate(summaries, config):
    """Cycles of passes before code generation (for choosing the blocking), from
    :func:`~compiler.schedule.pass_summary` tuples; the model of
    :meth:`~compiler.codegen.CodeGen.emit_layer` with typical instruction counts:
    per pass, two start writes (tiles, ports) in series, then the streams
    (:func:`~compiler.codegen.stream_cycles`; the weight frame holds at most
    one K x K slot per load) or the next pass's shadow and descriptor writes
    (about four per tile and one per port), whichever is longer, then half an
    instruction time (the grid's idle wait after the ports' wait).  Before the
    first pass, its shadow and descriptor writes run in series, after its
    kernels' frame streams alone."""
    cpi = cg.CYCLES_PER_INSTRUCTION
    total = 0
    for n, (loads, _, streams, tiles, latency) in enumerate(summaries):
        frame = [loads * config.kernel ** 2] if loads else []
        setup = (4 * tiles + len(streams) + len(frame)) * cpi
        if n == 0:
            total += setup + (frame[0] + 4 * cpi + cg.STREAM_OVERHEAD if frame else 0)
        stream = cg.stream_cycles(list(streams), frame, latency, config.beat_words)
        total += 2 * cpi + max(stream, setup) + cpi // 2 + cg.STREAM_OVERHEAD
    return total


def _best_packing(job, config):
    """(estimated cycles, packing, blocking) of the blocking with the fewest
    estimated cycles; ``blocking`` names it for the report."""
    if not isinstance(job, ConvJob):
        raise TypeError(job)
    best = None
    for length, packing in conv_packings(job, config).items():
        cost = _static_estimate((pass_summary(job, chains, config) for chains in packing[0]), config)
        if best is None or cost < best[0]:
            name = (f"chains of up to {length[1]} terms sharing input maps"
                    if isinstance(length, tuple) else f"chains of up to {length} terms")
            best = (cost, packing, f"blocking: {name}")
    if best is None:
        raise CompileError("no blocking of this layer fits the grid")
    return best


def _summary(p):
    """:func:`~compiler.schedule.pass_summary` of a built pass."""
    kernels = [s.weights for s in p.tiles if s.weights is not None]
    streams = [r.words for _, r in p.reads] + [r.words for _, r, _ in p.writes]
    return len(kernels), sum(len(k) for k in kernels), streams, len(p.tiles), p.latency


def _lower(node, graph, buffers, config, build=True):
    """(jobs, notes, passes, estimated cycles, MACs) of one node; without
    ``build`` the passes are only counted (a list of None)."""
    jobs, notes = lower_node(node, graph, buffers, config)
    window = (buffers[node.output].base, buffers[node.output].size)
    if not (jobs and isinstance(jobs[0], ConvJob)):
        passes = stream_passes(jobs, config, window)
        return jobs, notes, passes, _static_estimate(map(_summary, passes), config), \
            sum(p.macs for p in passes)
    passes, cycles = [], 0
    notes = list(notes)
    for job in jobs:
        cost, packing, blocking = _best_packing(job, config)
        if blocking not in notes:
            notes.append(blocking)
        cycles += cost
        if build:
            passes += conv_passes(job, config, window, packing)
        else:
            passes += [None] * len(packing[0])
    return jobs, notes, passes, cycles, sum(job.macs for job in jobs)


def _weight_words(node, config):
    """Words of distinct kernels ``node`` stores, each padded to K x K in the weight
    frames (kernels equal before rounding counted once; kernels that only become
    equal after rounding counted apart)."""
    K = config.kernel
    if node.op == "conv":
        w = node.params["weight"]
        words = 0
        for dy, dx, ph, pw in kernel_pieces(*w.shape[2:], K):
            rows = w[:, :, dy:dy + ph, dx:dx + pw].reshape(-1, ph * pw)
            rows = rows[np.any(rows != 0, axis=1)]
            words += len(np.unique(rows, axis=0)) * K * K
        return words
    if node.op == "gemm":
        n_out, features = node.params["weight"].shape
        k = chunk_side(features, K)
        return n_out * -(-features // (k * k)) * K * K
    return 0


def _check_memory(graph, buffers, config, grid):
    """Stop before code generation when tensors and kernels cannot fit the memory,
    naming the first layer whose output or kernels overflow it."""
    used = DATA_BASE + buffers[graph.input].size
    for node in graph.nodes:
        used += buffers[node.output].size + ALIGN + _weight_words(node, config)
        if used > config.memory_words:
            raise CompileError(f"tensors and kernels up to this layer need {used} words; grid "
                               f"{grid} has {config.memory_words} words of memory", node)


def _preset(grid):
    try:
        return preset(grid)
    except ValueError as exc:
        raise CompileError(str(exc)) from None


def estimate_model(path, grid, *, progress=None):
    """Schedule a model without generating code: per-layer passes, MACs and
    estimated cycles (the blocking search's own model).  For networks whose
    code or kernels would not fit, and for quick studies."""
    started = time.monotonic()
    say = progress or (lambda text: None)
    config = _preset(grid)
    graph = run_passes(to_graph(load_model(path)))
    buffers = plan_buffers(graph, assign_formats(graph, config.fmt, None), config)
    allocate(buffers, DATA_BASE)
    rows = []
    for n, node in enumerate(graph.nodes):
        _, _, passes, cycles, macs = _lower(node, graph, buffers, config, build=False)
        rows.append({"name": node.name, "op": node.onnx_op, "shape": graph.shapes[node.output],
                     "passes": len(passes), "macs": macs, "cycles": cycles})
        if (n + 1) % 10 == 0:
            say(f"  {n + 1} / {len(graph.nodes)} layers scheduled")
    return {"grid": grid, "config": config, "layers": rows, "seconds": time.monotonic() - started}


def _error_bounds(graph, buffers, layers_by_output, config, maxima):
    """Worst-case |quantised - float| per tensor (no saturation), propagated
    through the layers: input rounding, weight rounding against the largest
    input magnitude, every narrowing's half step, the mapper's measured error
    times the function's slope bound."""
    fmt = config.fmt
    err = {graph.input: 0.5 * 2.0 ** -buffers[graph.input].frac}

    def xmax(t):
        limit = 2.0 ** (fmt.width - 1 - buffers[t].frac)
        return min(limit, maxima[t] * 1.25) if maxima and t in maxima else limit

    for node in graph.nodes:
        y = buffers[node.output]
        half = 0.5 * 2.0 ** -y.frac
        e_in = [err[t] for t in node.inputs]
        if node.op in ("conv", "gemm", "affine", "avgpool"):
            if node.op == "conv":
                w = node.params["weight"].reshape(node.params["weight"].shape[0], -1)
            elif node.op == "gemm":
                w = node.params["weight"]
            elif node.op == "affine":
                w = node.params["scale"].reshape(-1, 1)
            else:
                w = avgpool_weight(node, 1).reshape(1, -1)
            layer = layers_by_output[node.output]
            fw = layer.weight_frac
            dw = 0.5 * 2.0 ** -fw if fw is not None else 0.0
            l1 = np.abs(w).sum(axis=1).max() + w.shape[1] * dw
            terms = w.shape[1]
            e = l1 * e_in[0] + terms * dw * xmax(node.inputs[0]) + layer.narrowings * half + \
                0.5 * 2.0 ** -(buffers[node.inputs[0]].frac + (fw or 0))
        elif node.op == "maxpool":
            e = e_in[0]
        elif node.op == "eltwise":
            op = node.attrs["op"]
            a, b = node.inputs
            if op in ("add", "sub"):
                e = e_in[0] + e_in[1]
            elif op in ("max", "min"):
                e = max(e_in)
            elif op == "mul":
                e = xmax(a) * e_in[1] + xmax(b) * e_in[0] + e_in[0] * e_in[1] + half
            else:
                e = float("inf")
        else:
            e = e_in[0]
        act = node.attrs.get("act")
        if act is not None:
            choice = mapper_for(act, y.frac, fmt, config.segments)
            e = choice.lipschitz * e + choice.max_error
        err[node.output] = float(e)
    return err


def compile_model(path, grid="tiny", calibration=None, *, progress=None, reference=True):
    """Compile the ONNX model at ``path`` for grid preset ``grid``.

    ``calibration``: float array shaped like the ONNX input, or None (Q8.8).
    ``progress``: callable(str) for progress lines.  ``reference``: run the
    reference engine on one input and measure per-layer error against
    onnxruntime for the report.
    """
    started = time.monotonic()
    say = progress or (lambda text: None)
    config = _preset(grid)
    model = load_model(path)
    graph = run_passes(to_graph(model))
    say(f"{Path(path).name}: {len(graph.nodes)} layers after folding and fusion")
    maxima = None
    if calibration is not None:
        from .onnx_reference import run_onnx
        calibration = _batch(calibration, graph.input_shape)
        outs = run_onnx(model, calibration, _onnx_names(graph))
        maxima = {name: float(np.max(np.abs(v))) for name, v in outs.items()}
        maxima = _ir_maxima(graph, maxima)
    formats = assign_formats(graph, config.fmt, maxima)
    buffers = plan_buffers(graph, formats, config)
    _check_memory(graph, buffers, config, grid)
    data_base = DATA_BASE
    if not graph.nodes:
        raise CompileError("nothing to run on the grid: the model has no operator besides "
                           "the host's Softmax")
    while True:
        compiled = _generate(graph, buffers, config, grid, data_base, say)
        if not isinstance(compiled, int):
            break
        data_base = -(-(compiled + 2 * len(graph.nodes) + 64) // ALIGN) * ALIGN
        say(f"program of {compiled} words: placing data at {data_base:#x}")
    by_output = {l.output: l for l in compiled.layers}
    bounds = _error_bounds(graph, buffers, by_output, config, maxima)
    for l in compiled.layers:
        l.error_bound = bounds[l.output]
    compiled.seconds = time.monotonic() - started
    if reference:
        x = calibration[:1] if calibration is not None else _default_input(graph)
        compiled.reference_input = "the first calibration input" if calibration is not None \
            else "a fixed random input (normal, seed 0)"
        compiled.errors = measure_errors(compiled, model, x, progress=say)
    return compiled


def _default_input(graph):
    rng = np.random.default_rng(0)
    return rng.normal(0.0, 1.0, graph.input_shape).astype(np.float32)


def _onnx_names(graph):
    return [n.onnx_outputs[-1] for n in graph.nodes if n.onnx_outputs] + \
        [name for n in graph.nodes for name in n.onnx_outputs[:-1]]


def _ir_maxima(graph, onnx_maxima):
    maxima = dict(onnx_maxima)
    for n in graph.nodes:
        maxima[n.output] = max(onnx_maxima.get(name, 0.0) for name in n.onnx_outputs)
    if graph.input_name in onnx_maxima:
        maxima[graph.input] = onnx_maxima[graph.input_name]
    return maxima


def _generate(graph, buffers, config, grid, data_base, say):
    stamps = data_base - 2 * (len(graph.nodes) + 2)
    stamps -= stamps % 2
    end = allocate(buffers, data_base)
    frames = {}                     # weight-frame bytes -> address
    weight_blocks = []
    next_weight = [-(-end // ALIGN) * ALIGN]

    def frame_address(words):
        key = words.tobytes()
        if key not in frames:
            frames[key] = next_weight[0]
            weight_blocks.append((next_weight[0], words))
            next_weight[0] += len(words)
        return frames[key]

    gen = CodeGen(config, stamps)
    gen.begin()
    layers = []
    for node in graph.nodes:
        jobs, notes, passes, _, macs = _lower(node, graph, buffers, config)
        layer = Layer(node.name, node.onnx_op, node.output, passes, macs,
                      graph.shapes[node.output], notes)
        layer.onnx_output = node.onnx_outputs[-1] if node.onnx_outputs else None
        layer.weight_frac = _weight_frac(jobs, buffers, node)
        layer.narrowings = _narrowings(jobs)
        gen.measure()
        gen.layer(f"{node.name} ({node.onnx_op}): {len(passes)} passes")
        layer.pass_cycles = gen.emit_layer(passes, frame_address)
        gen.check_layer()
        layer.pass_cycles[-1] += gen.measure() * cg.CYCLES_PER_INSTRUCTION
        layer.cycles = sum(layer.pass_cycles)
        layers.append(layer)
        if len(layers) % 10 == 0:
            say(f"  {len(layers)} / {len(graph.nodes)} layers scheduled")
    gen.end()
    source = "\n".join(gen.lines) + "\n"
    program = to_words(assemble(source))
    if len(program) > stamps:
        return len(program)             # does not fit below the data: the caller moves the data
    size = next_weight[0]
    if size > config.memory_words:
        raise CompileError(f"the program, tensors and weights need {size} words; grid {grid} "
                           f"has {config.memory_words} words of memory")
    image = np.zeros(size, dtype=np.int64)
    image[:len(program)] = program
    for b in buffers.values():
        image[b.base:b.base + b.size] = b.initial() & 0xFFFF
    for address, words in weight_blocks:
        image[address:address + len(words)] = np.asarray(words) & 0xFFFF
    compiled = Compiled(grid, config, graph, buffers, layers, source, image, stamps)
    compiled.program_words = len(program)
    return compiled


def _weight_frac(jobs, buffers, node):
    if not jobs or not isinstance(jobs[0], ConvJob) or jobs[0].mode.name == "MAX":
        return None
    fi = buffers[node.inputs[0]].frac
    fo = buffers[node.output].frac
    return jobs[0].shift + fo - fi


def _narrowings(jobs):
    if not jobs or not isinstance(jobs[0], ConvJob):
        return 1
    return max(len(t) for t in jobs[0].terms)


def _batch(x, onnx_shape):
    """``x`` as a float batch (N, ...) of inputs shaped like ``onnx_shape`` (one
    input without N is a batch of one); CompileError naming the shape otherwise."""
    x = np.asarray(x, dtype=np.float64)
    want = tuple(onnx_shape[1:])
    if x.ndim == len(want):
        x = x[None]
    if tuple(x.shape[1:]) != want:
        raise CompileError(f"input of shape {tuple(x.shape)}; the model takes (N, "
                           f"{', '.join(str(d) for d in want)})")
    return x


# -- Images, outputs and engines ---------------------------------------------------------

def _buffer(spec):
    """The :class:`~compiler.schedule.Buffer` a manifest entry describes."""
    from .schedule import Buffer
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
    image[buf.base:buf.base + len(words)] = words & ((1 << width) - 1)
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
    values = [int(memory[stamps + 2 * i]) | int(memory[stamps + 2 * i + 1]) << 16
              for i in range(n + 1)]
    return [values[i + 1] - values[i] for i in range(n)]


def run_reference_image(image, manifest, config):
    from .engine import run_program
    memory, halt, steps = run_program(image, config)
    if halt != 0:
        raise CompileError(f"the program halted with code {halt:#x}")
    return memory


def measure_errors(compiled, model, x, progress=None):
    """Per-layer max abs error and SNR of the reference engine against onnxruntime."""
    from .onnx_reference import run_onnx
    manifest = compiled.manifest()
    names = [l.onnx_output for l in compiled.layers if l.onnx_output]
    try:
        float_out = run_onnx(model, x, names)
    except Exception as exc:            # onnxruntime lacks some old operator versions
        compiled.reference_input = f"not measured: onnxruntime cannot run the model " \
            f"({str(exc).splitlines()[0][:120]})"
        return [{"layer": l.name, "max_abs": float("nan"), "snr_db": float("nan"),
                 "bound": l.error_bound, "saturates": False} for l in compiled.layers]
    image = input_image(compiled.image, manifest, x[0])
    memory = run_reference_image(image, manifest, compiled.config)
    rows = []
    for l in compiled.layers:
        if not l.onnx_output:
            continue                    # an internal step of a lowered operator (LRN)
        spec = manifest["buffers"][l.output]
        got = tensor_codes(memory, spec) * 2.0 ** -spec["frac"]
        ref = float_out[l.onnx_output][0].reshape(got.shape)
        err = np.abs(got - ref)
        signal = float(np.sum(ref ** 2))
        noise = float(np.sum((got - ref) ** 2))
        snr = float("inf") if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
        limit = 2.0 ** (compiled.config.fmt.width - 1 - spec["frac"])
        rows.append({"layer": l.name, "max_abs": float(err.max()), "snr_db": snr,
                     "bound": l.error_bound, "saturates": bool(np.max(np.abs(ref)) >= limit)})
    return rows


def write_outputs(compiled, outdir):
    """image.hex, image.npy, manifest.json, program.s (listing) and report.md in ``outdir``."""
    from sim.runner import write_hex
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = compiled.manifest()
    np.save(out / "image.npy", compiled.image.astype(np.uint16))
    write_hex(out / "image.hex", compiled.image, compiled.config.fmt.width)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=_json))
    (out / "program.s").write_text(compiled.source)
    (out / "report.md").write_text(report(compiled, manifest))
    return manifest


def _json(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)


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
        lines.append(f"| {l['index']} | {l['name']} | {l['op']} | {'x'.join(map(str, l['shape']))} "
                     f"| {l['passes']} | {l['macs']} | {l['estimated_cycles']} | {100 * util:.1f}% "
                     f"| {l['error_bound']:.3g} |")
    notes = [f"- {l['name']}: {n}" for l in manifest["layers"] for n in l["notes"]]
    if notes:
        lines += ["", "Notes:", ""] + notes
    if manifest["output"]["host_softmax"]:
        lines += ["", "The final Softmax runs on the host (`neuflow simulate` applies it)."]
    if compiled.errors:
        lines += ["", f"## Error against onnxruntime ({compiled.reference_input})", "",
                  "| layer | max abs error | SNR (dB) | bound | saturates |",
                  "| --- | --- | --- | --- | --- |"]
        for r in compiled.errors:
            lines.append(f"| {r['layer']} | {r['max_abs']:.4g} | {r['snr_db']:.1f} | "
                         f"{r['bound']:.3g} | {'yes' if r['saturates'] else 'no'} |")
    return "\n".join(lines) + "\n"


def load_compiled(directory):
    d = Path(directory)
    if not (d / "manifest.json").is_file() or not (d / "image.npy").is_file():
        raise CompileError(f"{d}: not a compiled directory (no manifest.json / image.npy); run "
                           "neuflow compile first")
    manifest = json.loads((d / "manifest.json").read_text())
    image = np.load(d / "image.npy").astype(np.int64)
    return manifest, image


def simulate(directory, x, engine="reference", *, progress=None, trace=None):
    """Run every image of ``x`` (N, ...) on ``engine``; returns (outputs, per-image info)."""
    manifest, image = load_compiled(directory)
    config = preset(manifest["grid"])
    x = _batch(x, manifest["input"]["onnx_shape"])
    outputs, info = [], []
    for n in range(x.shape[0]):
        img = input_image(image, manifest, x[n])
        if engine == "reference":
            memory = run_reference_image(img, manifest, config)
            cycles = None
        elif engine == "rtl":
            from sim.runner import run_image
            result = run_image(img, manifest["grid"], trace=trace if n == 0 else None)
            if not result.halted or result.halt_code != 0:
                raise CompileError(f"image {n}: the hardware halted with code "
                                   f"{result.halt_code:#x}" if result.halted else
                                   f"image {n}: the hardware did not halt")
            memory = result.memory
            cycles = result.cycles
        else:
            raise CompileError(f"unknown engine {engine!r}; use reference or rtl")
        outputs.append(read_output(memory, manifest))
        info.append({"memory": memory, "cycles": cycles})
        if progress:
            progress(n + 1, x.shape[0])
    return np.stack(outputs), info
