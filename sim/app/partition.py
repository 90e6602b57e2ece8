"""Partitioned runs: a compiled network's layers as independent pieces on the
RTL, in parallel (:mod:`compiler.pieces` makes the pieces).

Every piece is checked bit for bit: after it halts, its data memory must equal
the reference engine's at the same layer boundary.  Its layers' cycles come
from the program's own cycle stamps, so the pieces' cycles add up to a whole
run's (within :data:`TOLERANCE`, tested on the ``tiny`` grid).
"""

import time
from dataclasses import dataclass, replace

import numpy as np

from compiler import CompileError
from compiler.artefacts import input_image, read_output, stamp_values
from compiler.pieces import Resumable, bounds, checkpoints, data_base, piece_image, segments

from .parallel import job_pool

__all__ = ["TOLERANCE", "CUT_CYCLES", "PieceRun", "PartitionedRun", "run_piece", "run_partitioned", "run_networks",
           "count_pieces"]

#: How far the pieces' cycles may differ from a whole run's, as a fraction of
#: each layer's cycles.  A piece starts every layer from the state the whole
#: run leaves it in, so in practice they agree to the cycle.
TOLERANCE = 0.005
#: What a cut inside a layer may add to the layer's measured cycles: the
#: instructions between the resume stub's stamp and the layer's code and the
#: stop's jump (17 cycles on ``tiny`` at the default memory latency).
CUT_CYCLES = 32


@dataclass(frozen=True)
class PieceRun:
    first: int                      #: its first resume point
    stop: int                       #: its stop point
    segments: tuple                 #: ``(layer, measured cycles)`` of each layer or part it runs
    steps: int                      #: clock cycles simulated, stubs included
    seconds: float                  #: wall time of the run
    mismatch: str = None            #: the first data word that differs from the reference
    memory: np.ndarray = None       #: the memory after the last piece (the network's output)


@dataclass(frozen=True)
class PartitionedRun:
    pieces: tuple
    layers: int
    seconds: float                  #: wall time of the whole partitioned run

    @property
    def layer_cycles(self):
        """Measured cycles per layer: its pieces' parts added up."""
        cycles = [0] * self.layers
        for piece in self.pieces:
            for layer, count in piece.segments:
                cycles[layer] += count
        return tuple(cycles)

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


def run_piece(grid, piece, last=False):
    """Run one :class:`~compiler.pieces.Piece` on the RTL; a :class:`PieceRun`
    (with the memory after it if it is the ``last``)."""
    ran = _simulate(grid, piece.image, piece.first, piece.stop, piece.layers, piece.slots, piece.data_base,
                    len(piece.expected), last)
    return _checked(ran, piece.expected, piece.data_base)


def _simulate(grid, image, first, stop, layers, slots, base, extent, last):
    """Run a piece's ``image`` to halt: ``(PieceRun without its check, the data
    words base .. extent as read back)``; the whole memory too when ``last``.
    ``layers`` and ``slots``: what it measures (:func:`compiler.pieces.segments`)."""
    from sim.rtl.runner import run_image
    started = time.monotonic()
    result = run_image(image, grid)
    if not result.halted or result.halt_code != 0:
        raise CompileError(f"resume points {first}..{stop}: the hardware "
                           f"{'halted with code %#x' % result.halt_code if result.halted else 'did not halt'}")
    memory = result.memory
    values = [stamp_values(memory, slot, 0, 1)[0] for slot in slots]
    run = PieceRun(first, stop, tuple(zip(layers, (b - a for a, b in zip(values, values[1:])))), result.cycles,
                   time.monotonic() - started, None, memory if last else None)
    return run, memory[base:extent].astype(np.uint32)


def _checked(ran, expected, base):
    """The :class:`PieceRun` with its mismatch: the first data word that differs
    from the reference memory ``expected``."""
    run, got = ran
    want = expected[base:]
    differ = np.flatnonzero(got != want)
    if not differ.size:
        return run
    at = base + int(differ[0])
    return replace(run, mismatch=f"resume points {run.first}..{run.stop} (layers "
                                 f"{run.segments[0][0]}..{run.segments[-1][0]}): {differ.size} words differ "
                                 f"from the reference, the first at address {at:#x} ({int(got[differ[0]])} for "
                                 f"{int(want[differ[0]])})")


def run_partitioned(net, x, *, cuts=None, workers=None, dask=None, done=None):
    """Run the input ``x`` (one image, the ONNX input shape without N) through
    ``net`` (a :class:`~compiler.artefacts.Compiled` or a
    :class:`~compiler.pieces.Resumable`) as pieces (one per resume point, or
    runs of whole layers cut before the layer indices ``cuts``) on the RTL, in
    parallel; a :class:`PartitionedRun`."""
    return run_networks([(net, x, cuts)], workers=workers, dask=dask, done=done)[0]


def run_networks(networks, *, workers=None, dask=None, done=None):
    """:func:`run_partitioned` of several ``(compiled, x, cuts)`` at once.

    The reference engine runs each network in turn, here; a piece starts on
    the pool as soon as the engine reaches its first point, and is checked
    against the engine's memory at its stop point.  So the engine's work
    overlaps the simulations'.  A list of :class:`PartitionedRun`, one per
    network; ``done`` is called per piece."""
    started = time.monotonic()
    with job_pool(workers=workers, dask=dask) as pool:
        plans = [_launch(pool, net, x, cuts) for net, x, cuts in networks]
        runs = []
        for net, spans, futures, memory in plans:
            checked = []
            for (first, stop), future in zip(spans, futures):
                checked.append(_checked(future.result(), memory[stop], data_base(net)))
                if done:
                    done()
            runs.append((net, checked))
    seconds = time.monotonic() - started
    return [PartitionedRun(tuple(checked), net.layers, seconds) for net, checked in runs]


def count_pieces(net, cuts=None):
    """How many pieces :func:`run_partitioned` makes of ``net``."""
    return len(bounds(_resumable(net), cuts))


def _resumable(net):
    return net if isinstance(net, Resumable) else Resumable.of(net)


def _launch(pool, net, x, cuts):
    """Run the reference engine over one network, submitting each piece to
    ``pool`` when its first point is reached: ``(net, spans, futures, the
    checkpoints by point)``."""
    net = _resumable(net)
    spans = bounds(net, cuts)
    stop_of = dict(spans)
    image = input_image(net.image, net.manifest, x)
    base, extent, end = data_base(net), len(image), len(net.points)
    futures, memory = {}, {}

    def reached(point, snapshot):
        memory[point] = snapshot
        if point in stop_of:
            stop = stop_of[point]
            futures[point] = pool.submit(_simulate, net.grid, piece_image(net, snapshot, point, stop), point, stop,
                                         *segments(net, point, stop), base, extent, stop == end)

    checkpoints(net, image, reached)
    return net, spans, [futures[first] for first, _ in spans], memory
