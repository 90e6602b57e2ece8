"""The compiler's own check: calibration maxima from onnxruntime, and each
layer's error on the reference engine against onnxruntime."""

import math

import numpy as np

from sim.golden.engine import run_program

from .artefacts import Accuracy, input_image, tensor_codes
from .errors import CompileError
from .onnx_reference import run_onnx

__all__ = ["calibration_maxima", "default_input", "measure_errors", "check_bounds", "run_reference"]


def _onnx_names(graph):
    return [n.onnx_outputs[-1] for n in graph.nodes if n.onnx_outputs] + \
        [name for n in graph.nodes for name in n.onnx_outputs[:-1]]


def calibration_maxima(model, graph, x):
    """``{tensor: max |value|}`` over the batch ``x`` for every ONNX tensor a
    node's output stands for, and for every IR tensor (the largest of the
    ONNX tensors it stands for)."""
    outs = run_onnx(model, x, _onnx_names(graph))
    onnx_maxima = {name: float(np.max(np.abs(v))) for name, v in outs.items()}
    maxima = dict(onnx_maxima)
    for n in graph.nodes:
        if n.onnx_outputs:
            maxima[n.output] = max(onnx_maxima.get(name, 0.0) for name in n.onnx_outputs)
        else:       # an internal step (a partial sum): bounded by the sum of its inputs' maxima
            maxima[n.output] = sum(maxima.get(name, 0.0) for name in n.inputs)
    if graph.input_name in onnx_maxima:
        maxima[graph.input] = onnx_maxima[graph.input_name]
    return maxima


def default_input(graph, input_range=None):
    """The fixed input the report measures with when there is no calibration:
    normal, clipped to ``±input_range`` when one is declared."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, graph.input_shape)
    if input_range is not None:
        x = np.clip(x, -input_range, input_range)
    return x.astype(np.float32)


def run_reference(image, config):
    """Memory after running ``image`` on the reference engine to halt 0."""
    memory, halt, _ = run_program(image, config)
    if halt != 0:
        raise CompileError(f"the program halted with code {halt:#x}")
    return memory


def measure_errors(compiled, model, x, what):
    """Per-layer max abs error and SNR of the reference engine against onnxruntime
    on the first input of ``x`` (described by ``what``); an :class:`Accuracy`."""
    manifest = compiled.manifest()
    names = [l.onnx_output for l in compiled.layers if l.onnx_output]
    try:
        float_out = run_onnx(model, x, names)
    except Exception as exc:            # onnxruntime lacks some old operator versions
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        return Accuracy(tuple({"layer": l.name, "max_abs": float("nan"), "snr_db": float("nan"),
                               "bound": l.error_bound, "saturates": False} for l in compiled.layers),
                        f"not measured: onnxruntime cannot run the model ({reason})")
    memory = run_reference(input_image(compiled.image, manifest, x[0]), compiled.config)
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
        limit = compiled.config.fmt.span(spec["frac"])
        rows.append({"layer": l.name, "max_abs": float(err.max()), "snr_db": snr,
                     "bound": l.error_bound, "saturates": bool(np.max(np.abs(ref)) >= limit)})
    return Accuracy(tuple(rows), what)


def check_bounds(accuracy):
    """CompileError naming the first layer whose measured error exceeds its
    error bound (the bound excludes saturation: then the message says so)."""
    for row in accuracy.rows:
        if row["max_abs"] > row["bound"]:           # NaN (not measured) compares False
            cause = ("; the float values exceed the layer's format (saturation): give "
                     "--calibration inputs" if row["saturates"] else "")
            raise CompileError(f"layer {row['layer']!r}: error against onnxruntime "
                               f"{row['max_abs']:.4g} exceeds the compiler's bound "
                               f"{row['bound']:.4g} on {accuracy.input}{cause}")
