"""The cost model: the cycles of one pass, from the pass's description.

A pass is described by a :class:`PassCost`: the instructions the control CPU
runs in series with it and while it streams, the streams' lengths, the weight
frames and the pipeline's depth.  :func:`pass_cycles` turns it into cycles;
nothing else in the compiler estimates time.  The code generator returns the
:class:`PassCost` of what it emitted (:meth:`compiler.codegen.CodeGen.emit_layer`),
and the blocking search ranks its candidates by :func:`predicted_cost` (the
same description with typical instruction counts, before any code exists),
then keeps the cheapest candidate by what its code costs: the estimate the
search optimises is the estimate the report prints.

Calibrated against the RTL (docs/compiler.md): an instruction takes about
``CYCLES_PER_INSTRUCTION`` cycles (fetch and execute over the memory bus),
and a pass's streams take ``STREAM_OVERHEAD`` cycles beyond their words and
the pipeline's depth (the ports' start and drain).  The memory bus moves one
beat a cycle, and a port moves every beat that holds words of a row, so a
row costs its beats from its first word's beat to its last's, and a
contiguous rectangle those of its words as one run (:func:`rect_beats`);
instruction fetches while the streams run take a beat each.
"""

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from neuflow_hdl.soc import CONFIG_READ_LATENCY
from neuflow_hdl.streamer import reads_as_one_run

__all__ = ["CYCLES_PER_INSTRUCTION", "TABLE_ENTRY", "STREAM_OVERHEAD", "READ_EXTRA", "WAIT_EXTRA", "PassCost", "rect_beats", "expected_beats",
           "stream_cycles", "pass_cycles", "predicted_cost"]

CYCLES_PER_INSTRUCTION = 4
#: A ``cfgwt`` table entry in instructions: a beat read (3 cycles) where a
#: ``cfgwi`` takes its fetch and an execute cycle (4).
TABLE_ENTRY = 0.75
STREAM_OVERHEAD = 14
#: Cycles a configuration read (``cfgr``) spends beyond an instruction: its
#: latency on the configuration bus and the cycle the CPU takes the answer.
READ_EXTRA = CONFIG_READ_LATENCY + 1
#: Cycles a WAIT spends beyond an instruction: a read's (the average half
#: of the longer poll period it makes is counted per poll in pass_cycles).
WAIT_EXTRA = READ_EXTRA


@dataclass(frozen=True)
class PassCost:
    """What one pass's cycles depend on."""
    streams: tuple          #: words of each data stream (reads, partial sums, writes)
    latency: int            #: pipeline depth of the pass's longest path
    frame: tuple = ()       #: words of the weight frame streaming beside the data
    serial: int = 0         #: instructions in series before the streams start
    overlapped: int = 0     #: instructions that run while the streams run
    waits: int = 0          #: status polls after the streams (the first one overlaps them)
    alone: tuple = ()       #: words of weight frames streamed on their own before the pass
    after: int = 0          #: instructions in series after the pass (the layer's status check)
    beats: int = 0          #: memory-bus beats of the streams and the frame beside them
    reads: int = 0          #: configuration reads among the ``after`` instructions

    def plus(self, serial=0, overlapped=0, after=0, reads=0):
        """This pass with ``serial``, ``overlapped`` and ``after`` more
        instructions, ``reads`` of them configuration reads."""
        return PassCost(self.streams, self.latency, self.frame, self.serial + serial,
                        self.overlapped + overlapped, self.waits, self.alone, self.after + after, self.beats,
                        self.reads + reads)


def rect_beats(rect, beat_words):
    """Bus beats a port moves for ``rect`` (a :class:`~compiler.layout.Rect`): per
    row, every beat from the one holding its first word to the one holding its
    last; a contiguous rectangle (``stride == width``, or one row) is one run of
    words, its rows sharing beats."""
    if reads_as_one_run(rect.width, rect.height, rect.stride):
        return _beats(rect.base % beat_words, rect.width * rect.height, 1, 0, beat_words)
    return _beats(rect.base % beat_words, rect.width, rect.height, rect.stride % beat_words, beat_words)


@lru_cache(maxsize=1 << 16)
def _beats(offset, width, height, stride, beat_words):
    """:func:`rect_beats` of a rectangle whose first word is ``offset`` words into
    a beat and whose rows start ``stride`` (mod a beat) apart: all it depends on."""
    first = offset + stride * np.arange(height, dtype=np.int64)
    return int(np.sum((first + width - 1) // beat_words - first // beat_words + 1))


def expected_beats(width, height, beat_words, stride=None):
    """:func:`rect_beats` of ``height`` rows of ``width`` words ``stride`` apart
    (None: not contiguous) that start anywhere in a beat, on average."""
    if reads_as_one_run(width, height, stride):
        return (width * height - 1) / beat_words + 1
    return height * ((width - 1) / beat_words + 1)


def stream_cycles(data, frame, latency, beats, fetches=0):
    """Cycles of a pass's streams: the longest data stream through the pipeline
    (``latency``), the weight frame (which the convolvers always take), or the
    memory bus's ``beats`` (with the ``fetches`` of instructions running beside
    them), whichever is longest."""
    return max(max(data) + latency, max(frame) if frame else 0, math.ceil(beats) + fetches + latency)


@lru_cache(maxsize=1 << 16)
def pass_cycles(cost):
    """Estimated cycles of the pass ``cost`` describes (whole cycles; table
    entries count fractions of an instruction).  The waits after the
    streams: the ports' poll overlaps the streams, each further poll finds the
    grid idle (measured: about half an instruction time); each costs
    ``WAIT_EXTRA`` more for its configuration read."""
    cpi = CYCLES_PER_INSTRUCTION
    after = cost.after * cpi + cost.reads * READ_EXTRA
    if not cost.streams and not cost.frame and not cost.alone:     # a layer without passes
        return math.ceil(cost.serial * cpi + after)
    streams = stream_cycles(cost.streams, cost.frame, cost.latency, cost.beats, cost.overlapped)
    return math.ceil(cost.serial * cpi + sum(words + STREAM_OVERHEAD for words in cost.alone) +
                     max(streams, cost.overlapped * cpi) + max(cost.waits - 1, 0) * cpi // 2 +
                     cost.waits * WAIT_EXTRA + STREAM_OVERHEAD + after)


def predicted_cost(shape, config, *, first):
    """The :class:`PassCost` of a pass before its code exists, from its ``shape``
    (:func:`compiler.schedule.pass_shape`) with typical instruction counts: about
    four shadow writes per tile and one descriptor per stream, overlapping the
    previous pass's streams (in series for a layer's ``first`` pass, after its
    kernels' frame streams alone); two start writes; two waits."""
    kernel_words = shape.kernel_words
    frame = (kernel_words,) if shape.loads else ()
    beats = shape.beats + (expected_beats(kernel_words, 1, config.beat_words) if shape.loads else 0)
    setup = 4 * shape.tiles + len(shape.streams) + len(frame)
    if first:
        alone = frame
        serial = setup + 2 + (4 if frame else 0)
    else:
        alone, serial = (), 2
    return PassCost(streams=tuple(shape.streams), latency=shape.latency, frame=frame, serial=serial,
                    overlapped=setup, waits=2, alone=alone, beats=beats)
