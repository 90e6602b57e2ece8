"""The compiler as named stages, each a function from one declared type to the next:

=============  ==========================================  =====================================
stage          function                                    result
=============  ==========================================  =====================================
load           :func:`compiler.frontend.load_model`,       ``onnx.ModelProto``, :class:`~compiler.ir.Graph`
               :func:`compiler.frontend.to_graph`
passes         :func:`compiler.passes.run_passes`          :class:`~compiler.ir.Graph`
quantise       :func:`compiler.quantise.quantise`          :class:`~compiler.quantise.Quantisation`
memory layout  :func:`compiler.layout.plan_buffers`,       ``{tensor: Buffer}`` with addresses
               :func:`compiler.lower.weight_streams`,      (and the streamed weights' and
               :func:`compiler.lower.pool_partials`,       pooled partial sums' buffers)
               :func:`compiler.layout.allocate`
lower          :func:`compiler.lower.lower_node`           a :class:`~compiler.lower.Lowered` per node
schedule and   :func:`compiler.program.generate`           :class:`~compiler.program.Program`
generate code
link           :func:`link`                                the memory image
=============  ==========================================  =====================================

:func:`compile_model` runs them all (then the error bounds and, optionally,
the reference engine against onnxruntime); :func:`estimate_model` stops after
code generation, for networks whose image would not fit.
"""

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from neuflow_hdl.numerics import unsigned_words
from neuflow_hdl.presets import preset
from sim.golden.asm import assemble, to_words

from .accuracy import calibration_maxima, check_bounds, default_input, measure_errors
from .artefacts import Compiled, Layer, as_batch
from .bounds import error_bounds, vacuous_bounds
from .errors import CompileError
from .frontend import load_model, to_graph
from .ir import printable
from .layout import (ALIGN, DATA_BASE, align_up, allocate, check_memory, first_data_base, plan_buffers,
                     stamp_address, stamp_slots)
from .lower import lower_node, pool_partials, weight_streams
from .passes import fuse_pools, run_passes
from .program import generate
from .quantise import quantise
from .runtime import compiling

__all__ = ["compile_model", "estimate_model", "link", "Frontend"]


@dataclass(frozen=True)
class Frontend:
    """The model after loading and the graph passes, for a grid."""
    grid: str
    config: object
    model: object                   #: the checked ONNX model
    graph: object                   #: the IR after :func:`~compiler.passes.run_passes`


def _frontend(path, grid):
    try:
        config = preset(grid)
    except ValueError as exc:
        raise CompileError(str(exc)) from None
    model = load_model(path)
    return Frontend(grid, config, model, fuse_pools(run_passes(to_graph(model)), config))


def _buffers(graph, quantisation, config):
    """The memory-layout stage's buffers (not yet placed): every tensor's, the
    streamed weights' and the pooled convolutions' partial sums'."""
    buffers = plan_buffers(graph, quantisation.formats, config)
    return pool_partials(graph, weight_streams(graph, buffers, quantisation, config), config)


def _stamp_table(data_base, layers):
    """Address of the cycle-stamp table (:func:`~compiler.layout.stamp_slots`), just below the data."""
    stamps = stamp_address(data_base, -stamp_slots(layers))
    return stamps - stamps % 2


def _code(front, quantisation, buffers, data_base, progress=None):
    """Lower, schedule and generate with the data from ``data_base``: (lowered, program)."""
    g, config = front.graph, front.config
    end = allocate(buffers, data_base)
    lowered = [lower_node(node, g, buffers, config, quantisation) for node in g.nodes]
    program = generate(g, lowered, buffers, config, _stamp_table(data_base, len(g.nodes)),
                       align_up(end, ALIGN), progress=progress)
    return lowered, program


def link(program_words, buffers, frames, config, grid):
    """The link stage: the memory image holding the program from address 0, every
    buffer's initial words (pads set) and the weight frames."""
    size = frames.end
    if size > config.memory_words:
        raise CompileError(f"the program, tensors and weights need {size} words; grid {grid} "
                           f"has {config.memory_words} words of memory")
    image = np.zeros(size, dtype=np.int64)
    image[:len(program_words)] = program_words
    width = config.fmt.width
    mask = (1 << width) - 1
    for b in buffers.values():
        words = image[b.base:b.base + b.size]
        b.place_initial(words)
        np.bitwise_and(words, mask, out=words)  # unsigned, as memory holds them
    for address, words in frames.blocks:
        image[address:address + len(words)] = unsigned_words(words, width)
    return image


def _layers(graph, lowered, program, bounds, bound_notes):
    return tuple(Layer(node.name, node.onnx_op, node.output,
                       node.onnx_outputs[-1] if node.onnx_outputs else None,
                       graph.shapes[node.output], code.passes, low.macs,
                       low.notes + tuple(dict.fromkeys(code.blockings)) +
                       ((bound_notes[node.output],) if node.output in bound_notes else ()),
                       code.costs, bounds[node.output])
                 for node, low, code in zip(graph.nodes, lowered, program.layers))


def _input_range(declared, calibration):
    """The inputs' largest magnitude the bounds assume: ``declared``, else the
    calibration's largest, else None (the input format's range)."""
    if declared is not None:
        declared = float(declared)
        if not (math.isfinite(declared) and declared > 0):
            raise CompileError(f"input range {declared:g}: must be a positive, finite magnitude")
        return declared
    if calibration is not None:
        return float(np.max(np.abs(calibration))) or None
    return None


def _vacuous_bounds(graph, bounds, quantisation, config, input_range):
    """``{tensor: note}`` for the layers whose error bound is not below their
    output format's range.  Without a declared input range that is an error
    naming the first (declaring one is the fix); with one, it is the worst
    case of the network's depth and weights, and the report says so."""
    found = vacuous_bounds(graph, bounds, quantisation.formats, config.fmt)
    if found and input_range is None:
        node, bound, span = found[0]
        raise CompileError(f"layer {printable(node.name)!r} ({node.onnx_op}): its error bound "
                           f"{bound:.4g} (for inputs anywhere in the input format's range) is not "
                           f"below its output format's range ±{span:g}, so it bounds nothing; "
                           "declare the inputs' largest magnitude with --input-range, or give "
                           "--calibration inputs")
    return {node.output: f"worst-case error bound {bound:.4g} is not below the output's range "
                         f"±{span:g} (the worst case of the layers before it): only the measured "
                         "error says how close it is"
            for node, bound, span in found}


def compile_model(path, grid="tiny", calibration=None, *, input_range=None, progress=None,
                  layer_done=None, reference=True):
    """Compile the ONNX model at ``path`` for grid preset ``grid``: a :class:`Compiled`.

    ``calibration``: float array shaped like the ONNX input, or None (Q8.8).
    ``input_range``: the largest magnitude the network's inputs take, which the
    error bounds assume (default: the calibration's largest, else the input
    format's range).  A layer whose bound is not below its output's range is
    refused: such a bound says nothing.
    ``progress``: callable(str) for progress lines; ``layer_done``: called as
    ``layer_done(layers done, layers)`` during code generation.
    ``reference``: run the reference engine on one input and measure
    per-layer error against onnxruntime for the report.
    """
    with compiling():
        return _compile(path, grid, calibration, input_range=input_range, progress=progress,
                        layer_done=layer_done, reference=reference)


def _compile(path, grid, calibration, *, input_range, progress, layer_done, reference):
    """The body of :func:`compile_model`."""
    started = time.monotonic()
    say = progress or (lambda text: None)
    front = _frontend(path, grid)
    graph, config = front.graph, front.config
    say(f"{Path(path).name}: {len(graph.nodes)} layers after folding and fusion")
    if not graph.nodes:
        raise CompileError("nothing to run on the grid: the model has no operator besides "
                           "the host's Softmax")
    maxima = None
    if calibration is not None:
        calibration = as_batch(calibration, graph.input_shape, "calibration")
        maxima = calibration_maxima(front.model, graph, calibration)
    input_range = _input_range(input_range, calibration)
    quantisation = quantise(graph, config, maxima)
    buffers = _buffers(graph, quantisation, config)
    check_memory(graph, buffers, config, grid)
    data_base = first_data_base(len(graph.nodes), config.memory_words)
    while True:
        lowered, program = _code(front, quantisation, buffers, data_base, layer_done)
        words = to_words(assemble(program.source))
        stamps = _stamp_table(data_base, len(graph.nodes))
        if len(words) <= stamps:
            break
        # The program reaches the data: place the data above it and generate again.
        data_base = align_up(len(words) + 2 * len(graph.nodes) + 64, ALIGN)
        say(f"program of {len(words)} words: placing data at {data_base:#x}")
    image = link(words, buffers, program.frames, config, grid)
    bounds = error_bounds(graph, quantisation, lowered, config, maxima, input_range)
    bound_notes = _vacuous_bounds(graph, bounds, quantisation, config, input_range)
    compiled = Compiled(grid, config, graph, buffers, _layers(graph, lowered, program, bounds, bound_notes),
                        program.source, image, stamps, len(words), program.points,
                        input_range=input_range)
    if reference:
        if calibration is not None:
            x, what = calibration[:1], "the first calibration input"
        else:
            x, what = default_input(graph, input_range), "a fixed random input (normal, seed 0)"
        compiled = replace(compiled, accuracy=measure_errors(compiled, front.model, x, what))
        check_bounds(compiled.accuracy)
    return replace(compiled, seconds=time.monotonic() - started)


def estimate_model(path, grid, *, progress=None):
    """Schedule and generate code for a model without assembling or linking it:
    per-layer passes, MACs and estimated cycles, equal to what
    :func:`compile_model` reports.  For networks whose image would not fit.
    ``progress``: called as ``progress(layers done, layers)``."""
    with compiling():
        return _estimate(path, grid, progress)


def _estimate(path, grid, progress):
    """The body of :func:`estimate_model`."""
    started = time.monotonic()
    front = _frontend(path, grid)
    graph, config = front.graph, front.config
    quantisation = quantise(graph, config, None)
    buffers = _buffers(graph, quantisation, config)
    lowered, program = _code(front, quantisation, buffers, DATA_BASE, progress=progress)
    rows = [{"name": node.name, "op": node.onnx_op, "shape": graph.shapes[node.output],
             "passes": len(code.passes), "macs": low.macs, "cycles": code.cycles}
            for node, low, code in zip(graph.nodes, lowered, program.layers)]
    return {"grid": grid, "config": config, "layers": rows, "seconds": time.monotonic() - started}
