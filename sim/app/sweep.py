"""Design sweeps: every network on every grid preset, compiled and run on the RTL.

A design point is one network on one preset: compiled for it, run on its
Verilator harness with a random input (seeded, the same for every preset),
checked layer by layer against the reference engine, with measured cycles
beside the compiler's estimate.  The points are independent jobs for
:func:`sim.app.parallel.run_parallel`: on this machine's cores (a process
each), or on a Dask cluster.  A point takes the model's bytes, not its path, so a worker needs no
shared file system.  A network that a preset cannot take is a result of the
sweep (the point says why), not an error.
"""

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler import CompileError
from compiler.pipeline import compile_model

from .parallel import run_parallel
from .verify import verify

__all__ = ["SweepPoint", "run_point", "sweep"]


@dataclass(frozen=True)
class SweepPoint:
    model: str
    grid: str
    refused: str = None             #: why the preset cannot take the network (then nothing ran)
    clock_mhz: float = 0.0
    convolver_macs: int = 0
    macs: int = 0                   #: the network's useful multiply-accumulates per image
    estimated: tuple = ()           #: the compiler's cycles per layer
    measured: tuple = ()            #: the RTL's cycles per layer (its cycle stamps)
    cycles: int = 0                 #: the RTL's cycles from reset to halt
    mismatch: str = None            #: the first word differing from the reference engine
    seconds: float = 0.0            #: wall time of the point: compile and simulation

    @property
    def ran(self):
        return self.refused is None

    @property
    def estimate_off(self):
        """(estimated - measured) / measured over the layers."""
        return (sum(self.estimated) - sum(self.measured)) / max(sum(self.measured), 1)

    @property
    def frames_per_second(self):
        return self.clock_mhz * 1e6 / max(self.cycles, 1)

    @property
    def utilisation(self):
        """Useful MACs per cycle over the preset's convolver MACs."""
        return self.macs / max(self.cycles, 1) / max(self.convolver_macs, 1)

    def as_json(self):
        keys = ("model", "grid", "refused", "clock_mhz", "convolver_macs", "macs", "cycles", "mismatch",
                "seconds")
        row = {key: getattr(self, key) for key in keys}
        row.update(estimated=list(self.estimated), measured=list(self.measured))
        if self.ran:
            row.update(frames_per_second=self.frames_per_second, utilisation=self.utilisation,
                       estimate_off=self.estimate_off)
        return row


def run_point(name, model, grid, seed):
    """One design point: the ONNX ``model`` (bytes) called ``name`` on preset
    ``grid``, with the random input of ``seed``; a :class:`SweepPoint`."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "model.onnx"
        path.write_bytes(model)
        try:
            compiled = compile_model(path, grid, reference=False)
        except CompileError as exc:
            return SweepPoint(name, grid, refused=str(exc), seconds=time.monotonic() - started)
    manifest = compiled.manifest()
    shape = manifest["input"]["onnx_shape"]
    x = np.random.default_rng(seed).normal(0.0, 1.0, (1, *shape[1:])).astype(np.float32)
    run = verify(manifest, compiled.image, x, "rtl", workers=1).images[0]
    return SweepPoint(name, grid, clock_mhz=compiled.config.clock_mhz,
                      convolver_macs=compiled.config.convolver_macs,
                      macs=sum(layer["macs"] for layer in manifest["layers"]),
                      estimated=tuple(layer["estimated_cycles"] for layer in manifest["layers"]),
                      measured=tuple(run.layer_cycles), cycles=run.cycles, mismatch=run.mismatch,
                      seconds=time.monotonic() - started)


def sweep(models, grids, *, seed=0, workers=None, dask=None, done=None):
    """Every network of ``models`` (``{name: ONNX bytes}``) on every preset of
    ``grids``, in parallel (``workers`` processes here, since a point compiles
    in Python, or on the Dask cluster ``dask``); a list of :class:`SweepPoint`,
    networks outer, presets inner.  ``done`` is called once per point."""
    jobs = [(name, model, grid, seed) for name, model in models.items() for grid in grids]
    return run_parallel(run_point, jobs, workers=workers, dask=dask, done=done, processes=True)
