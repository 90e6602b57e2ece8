"""Partitioned runs: a compiled network's layers as independent pieces on the
RTL, in parallel (:mod:`compiler.pieces` makes the pieces).

Every piece is checked bit for bit: after it halts, its data memory must equal
the reference engine's at the same layer boundary.  Its layers' cycles come
from the program's own cycle stamps, so the pieces' cycles add up to a whole
run's (within :data:`TOLERANCE`, tested on the ``tiny`` grid).
"""

import time
from dataclasses import dataclass

import numpy as np

from compiler import CompileError
from compiler.artefacts import input_image, read_output, stamp_values
from compiler.pieces import Resumable, pieces

from .parallel import run_parallel

__all__ = ["TOLERANCE", "PieceRun", "PartitionedRun", "run_piece", "run_partitioned", "run_networks"]

#: How far the pieces' cycles may differ from a whole run's, as a fraction of
#: each layer's cycles.  A piece starts every layer from the state the whole
#: run leaves it in, so in practice they agree to the cycle.
TOLERANCE = 0.005


@dataclass(frozen=True)
class PieceRun:
    first: int
    stop: int
    layer_cycles: tuple             #: measured cycles of each of its layers
    steps: int                      #: clock cycles simulated, resume stub included
    seconds: float                  #: wall time of the run
    mismatch: str = None            #: the first data word that differs from the reference
    memory: np.ndarray = None       #: the memory after the last piece (the network's output)


@dataclass(frozen=True)
class PartitionedRun:
    pieces: tuple
    seconds: float                  #: wall time of the whole partitioned run

    @property
    def layer_cycles(self):
        return tuple(c for p in self.pieces for c in p.layer_cycles)

    @property
    def cycles(self):
        return sum(self.layer_cycles)

    @property
    def bit_exact(self):
        return all(p.mismatch is None for p in self.pieces)

    @property
    def steps(self):
        return sum(p.steps for p in self.pieces)

    def output(self, manifest):
        """The network's float output, from the last piece's memory."""
        return read_output(self.pieces[-1].memory, manifest)


def run_piece(grid, piece, stamps, last=False):
    """Run one :class:`~compiler.pieces.Piece` on the RTL; a :class:`PieceRun`
    (with the memory after it if it is the ``last``)."""
    from sim.rtl.runner import run_image
    started = time.monotonic()
    result = run_image(piece.image, grid)
    if not result.halted or result.halt_code != 0:
        raise CompileError(f"layers {piece.first}..{piece.stop - 1}: the hardware "
                           f"{'halted with code %#x' % result.halt_code if result.halted else 'did not halt'}")
    memory = result.memory
    values = stamp_values(memory, stamps, piece.first, piece.stop + 1)
    got = memory[piece.data_base:len(piece.expected)]
    want = piece.expected[piece.data_base:]
    differ = np.flatnonzero(got != want)
    mismatch = None
    if differ.size:
        at = piece.data_base + int(differ[0])
        mismatch = (f"layers {piece.first}..{piece.stop - 1}: {differ.size} words differ from the "
                    f"reference, the first at address {at:#x} ({int(memory[at])} for {int(piece.expected[at])})")
    return PieceRun(piece.first, piece.stop, tuple(b - a for a, b in zip(values, values[1:])),
                    result.cycles, time.monotonic() - started, mismatch, memory if last else None)


def run_partitioned(net, x, *, cuts=None, workers=None, dask=None, done=None):
    """Run the input ``x`` (one image, the ONNX input shape without N) through
    ``net`` (a :class:`~compiler.artefacts.Compiled` or a
    :class:`~compiler.pieces.Resumable`) as pieces (one per layer, or cut
    before the layer indices ``cuts``) on the RTL, in parallel; a
    :class:`PartitionedRun`."""
    return run_networks([(net, x, cuts)], workers=workers, dask=dask, done=done)[0]


def run_networks(networks, *, workers=None, dask=None, done=None):
    """:func:`run_partitioned` of several ``(compiled, x, cuts)`` at once: every
    piece of every network in one pool, the longest (by the estimate) first, so
    the pool finishes as soon as the longest piece allows.  A list of
    :class:`PartitionedRun`, one per network; ``done`` is called per piece."""
    started = time.monotonic()
    jobs, owners = [], []
    for n, (net, x, cuts) in enumerate(networks):
        net = net if isinstance(net, Resumable) else Resumable.of(net)
        estimates = [layer["estimated_cycles"] for layer in net.manifest["layers"]]
        image = input_image(net.image, net.manifest, x)
        for piece in pieces(net, image, cuts):
            estimate = sum(estimates[piece.first:piece.stop])
            jobs.append((estimate, (net.grid, piece, net.stamps, piece.stop == len(estimates))))
            owners.append(n)
    order = sorted(range(len(jobs)), key=lambda k: -jobs[k][0])
    runs = run_parallel(run_piece, [jobs[k][1] for k in order], workers=workers, dask=dask, done=done)
    by_job = dict(zip(order, runs))
    seconds = time.monotonic() - started
    return [PartitionedRun(tuple(by_job[k] for k in range(len(jobs)) if owners[k] == n), seconds)
            for n in range(len(networks))]
