"""The verify loop: run a compiled network on an engine, image by image, compare
every layer with the reference engine, and return a typed result.  The
``neuflow simulate`` command, the demo and the tests all call :func:`verify`."""

from dataclasses import dataclass, field

import numpy as np

from compiler import CompileError
from compiler.accuracy import run_reference
from compiler.artefacts import (as_batch, first_mismatch, input_image, layer_cycles, load_compiled,
                                read_output, saturation)
from neuflow_hdl.presets import preset

from .parallel import run_parallel

__all__ = ["ENGINES", "ImageRun", "Saturation", "Verification", "input_saturation", "verify",
           "verify_directory"]

ENGINES = ("reference", "rtl")


@dataclass(frozen=True)
class ImageRun:
    """One image on the engine."""
    output: np.ndarray              #: the network's float output (ONNX output shape without N)
    memory: np.ndarray              #: every memory word after halt
    cycles: int = None              #: reset to halt (rtl only)
    layer_cycles: tuple = ()        #: measured cycles per layer from the cycle stamps (rtl only)
    mismatch: str = None            #: the first layer / map / pixel differing from the reference


@dataclass(frozen=True)
class Saturation:
    """Input values outside the input format's range (their words saturate), or
    outside the range the compiler's error bounds hold for."""
    values: int                     #: how many saturate, over the batch
    outside: int                    #: how many lie beyond ``±bounded``
    total: int                      #: values in the batch
    largest: float                  #: the largest magnitude in the batch
    low: float                      #: the format's range
    high: float
    bounded: float                  #: the inputs' largest magnitude the error bounds assume

    def __bool__(self):
        return bool(self.values or self.outside)

    def describe(self):
        parts = []
        if self.values:
            parts.append(f"{self.values} of {self.total} input values saturate (largest magnitude "
                         f"{self.largest:.4g}; the input format holds {self.low:g} .. {self.high:g})")
        if self.outside:
            parts.append(f"{self.outside} of {self.total} input values lie outside ±{self.bounded:g}, "
                         "the range the compiler's error bounds hold for (largest magnitude "
                         f"{self.largest:.4g})")
        return "; ".join(parts)


@dataclass(frozen=True)
class Verification:
    """A network run on an engine over a batch."""
    engine: str
    manifest: dict
    images: tuple = field(default_factory=tuple)
    saturation: Saturation = None

    @property
    def outputs(self):
        return np.stack([r.output for r in self.images])

    @property
    def bit_exact(self):
        return all(r.mismatch is None for r in self.images)

    @property
    def first_mismatch(self):
        """``(image, description)`` of the first mismatch, or None."""
        return next(((n, r.mismatch) for n, r in enumerate(self.images) if r.mismatch), None)

    def mean_layer_cycles(self):
        """Measured cycles per layer, averaged over the images (rtl only)."""
        return np.mean(np.array([r.layer_cycles for r in self.images]), axis=0)

    def estimates(self):
        return [layer["estimated_cycles"] for layer in self.manifest["layers"]]


def _run_rtl(image, grid, n, trace):
    from sim.rtl.runner import run_image
    result = run_image(image, grid, trace=trace)
    if not result.halted:
        raise CompileError(f"image {n}: the hardware did not halt")
    if result.halt_code != 0:
        raise CompileError(f"image {n}: the hardware halted with code {result.halt_code:#x}")
    return result


def input_saturation(x, manifest, strict=False):
    """The :class:`Saturation` of the float batch ``x`` in the input's format;
    with ``strict``, a CompileError if any value saturates or lies outside the
    range the error bounds hold for."""
    count, outside, largest, low, high, bounded = saturation(x, manifest)
    saturated = Saturation(count, outside, x.size, largest, low, high, bounded)
    if strict and saturated:
        raise CompileError(f"--strict: {saturated.describe()}")
    return saturated


def _run_one(manifest, image, x, engine, n, trace):
    """One input ``x`` on ``engine`` (and on the reference engine); an :class:`ImageRun`."""
    img = input_image(image, manifest, x)
    reference = run_reference(img, preset(manifest["grid"]))
    if engine == "reference":
        return ImageRun(read_output(reference, manifest), reference)
    result = _run_rtl(img, manifest["grid"], n, trace)
    return ImageRun(read_output(result.memory, manifest), result.memory, result.cycles,
                    tuple(layer_cycles(result.memory, manifest)),
                    first_mismatch(reference, result.memory, manifest))


def verify(manifest, image, x, engine="reference", *, progress=None, trace=None, strict=False,
           workers=None, dask=None):
    """Run every input of ``x`` (N, ...) on ``engine`` from the memory ``image``
    described by ``manifest``.  On ``rtl`` each image is also run on the
    reference engine and compared layer by layer.  ``progress``: called once per
    image.  ``trace``: rtl only, an FST waveform of the first image.
    ``strict``: input values that saturate in the input format are an error
    (otherwise they are counted in the result).  The images run in parallel:
    ``workers`` at once on this machine (default: one per core on ``rtl``, one
    on ``reference``, whose engine is Python), or on the Dask cluster ``dask``
    (:func:`sim.app.parallel.run_parallel`)."""
    if engine not in ENGINES:
        raise CompileError(f"unknown engine {engine!r}; use {' or '.join(ENGINES)}")
    x = as_batch(x, manifest["input"]["onnx_shape"])
    saturated = input_saturation(x, manifest, strict)
    if engine == "reference" and workers is None:
        workers = 1
    jobs = [(manifest, image, x[n], engine, n, trace if n == 0 else None) for n in range(x.shape[0])]
    runs = run_parallel(_run_one, jobs, workers=workers, dask=dask, done=progress)
    return Verification(engine, manifest, tuple(runs), saturated)


def verify_directory(directory, x, engine="reference", **kw):
    """:func:`verify` of the network ``neuflow compile`` wrote into ``directory``."""
    manifest, image = load_compiled(directory)
    return verify(manifest, image, x, engine, **kw)
