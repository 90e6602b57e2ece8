"""A compiled network cut into pieces that run on their own.

The program can be resumed at its resume points
(:class:`~compiler.codegen.ResumePoint`): the start of every layer, and the
start of a pass every :data:`~compiler.codegen.RESUME_EVERY` estimated cycles
inside a long layer.  A piece runs from one point to a later one (or to the
end).  Its memory image is the memory at its first point as the reference
engine computes it (a checkpoint), with two changes:

* unless it starts at the beginning, the first instruction jumps to a resume
  stub placed above the image (:meth:`compiler.codegen.CodeGen.resume`): it
  brings the machine from reset to the state the point's code was generated
  for (the configuration registers as written, the kernels the tiles hold),
  stores the cycle counter in the stamp slot of the point's layer when the
  point is inside the layer, and jumps to the point's label;
* unless it runs to the end, it halts at its stop point: after the layer's
  cycle stamp when the point starts a layer, else by a jump from the point's
  label to a stop stub that stamps the spare slot of the table and halts.

So a piece runs exactly the code between its points, between cycle stamps;
after it halts, every word of data memory equals the reference engine's
memory at its stop point (or at the end).  The stubs' cycles fall outside
the stamps and are not counted.
"""

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from neuflow_hdl.isa import INSTRUCTION_WORDS, Opcode, decode
from neuflow_hdl.numerics import unsigned_words
from neuflow_hdl.presets import preset
from sim.golden.asm import AsmError, assemble, from_words, symbols, to_words
from sim.golden.engine import run_program

from .artefacts import PROGRAM, STATES, load_compiled
from .codegen import CodeGen, ResumePoint, WeightFrames
from .errors import CompileError
from .layout import ALIGN, align_up, stamp_address, stamp_slots
from .rolling import render

__all__ = ["Resumable", "Piece", "checkpoints", "segments", "bounds", "data_base",
           "piece_image", "pieces", "load_resumable"]


@dataclass(frozen=True, eq=False)
class Resumable:
    """What cutting a compiled network into pieces needs: its grid, its program
    (assembly source, for the points' labels), the cycle-stamp table, the
    manifest and image, and the program's
    :class:`~compiler.codegen.ResumePoint` s."""
    grid: str
    config: object
    source: str
    stamps: int
    points: tuple
    manifest: dict
    image: np.ndarray

    @property
    def layers(self):
        return len(self.manifest["layers"])

    @cached_property
    def starts(self):
        """The instruction index of each resume point's label."""
        try:
            labels = symbols(self.source)
            return tuple(labels[point.label] for point in self.points)
        except (AsmError, KeyError) as exc:
            raise CompileError(f"the program does not label its resume points ({exc}); compile again") from None

    @classmethod
    def of(cls, compiled):
        """The :class:`Resumable` of a :class:`~compiler.artefacts.Compiled`."""
        return cls(compiled.grid, compiled.config, compiled.source, compiled.stamps, compiled.points,
                   compiled.manifest(), compiled.image)


def load_resumable(directory):
    """The :class:`Resumable` of a directory ``neuflow compile`` wrote (its
    manifest, image, program.s and states.json, all checked: a CompileError
    names the file that is missing or out of shape)."""
    manifest, image = load_compiled(directory)
    d = Path(directory)
    try:
        config = preset(manifest["grid"])
        source = (d / PROGRAM).read_text()
        states = json.loads((d / STATES).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CompileError(f"{d}: no readable {PROGRAM} and {STATES} ({exc}); compile again") from None
    try:
        points = tuple(ResumePoint.from_json(point, config) for point in states) \
            if isinstance(states, list) else None
    except ValueError as exc:
        raise CompileError(f"{d / STATES}: {exc}; compile again") from None
    layers = len(manifest["layers"])
    if points is None or [p.layer for p in points if p.pass_ == 0] != list(range(layers)) or \
            [(p.layer, p.pass_) for p in points] != sorted({(p.layer, p.pass_) for p in points}) or \
            any(p.layer >= layers for p in points):
        raise CompileError(f"{d / STATES}: not the resume points of {layers} layers in program order; "
                           "compile again")
    return Resumable(manifest["grid"], config, source, manifest["stamps"], points, manifest, image)


@dataclass(frozen=True, eq=False)
class Piece:
    first: int                      #: its first resume point (an index into the network's points)
    stop: int                       #: its stop point (the count of points: the end)
    image: np.ndarray               #: the memory image that runs it from reset
    expected: np.ndarray            #: the reference memory when it halts (the image's extent)
    data_base: int                  #: the words from here up are compared (below: program, stamps)
    layers: tuple                   #: the layer of each cycle it measures (see :func:`segments`)
    slots: tuple                    #: the stamp slots that bound them (one more than ``layers``)


def checkpoints(net, image, reached=None):
    """The reference engine's memory at every resume point and at halt: a list
    of ``points + 1`` arrays (unsigned words).  ``reached(point, memory)`` is
    called with each as soon as the engine gets there (the halt as point
    ``points``), so pieces can start while the engine runs on."""
    starts = net.starts
    point_at = {s: n for n, s in enumerate(starts)}
    taken = dict.fromkeys(starts)
    final, halt, _ = run_program(image, net.config, snapshots=taken,
                                 reached=None if reached is None else lambda pc, m: reached(point_at[pc], m))
    if halt != 0:
        raise CompileError(f"the program halted with code {halt:#x} on the reference engine")
    if reached is not None:
        reached(len(starts), final)
    return [taken[s] for s in starts] + [final]


def _patch(image, index, source):
    words = to_words(assemble(source))
    image[index * INSTRUCTION_WORDS:index * INSTRUCTION_WORDS + len(words)] = words


def _halt_after_stamp(image, start, width):
    """``halt 0`` after the cycle stamp that begins a layer at instruction
    ``start`` (:meth:`~compiler.codegen.CodeGen.layer`: ``cycles``, ``st``)."""
    base = start * INSTRUCTION_WORDS
    stamp = [decode(word)[0] for word in from_words(image[base:base + 2 * INSTRUCTION_WORDS], width)]
    if stamp != [Opcode.CYCLES.value, Opcode.ST.value]:
        raise CompileError(f"instruction {start}: a layer does not begin with its cycle stamp")
    _patch(image, start + 2, "halt 0\n")


def segments(net, first, stop):
    """What a piece from point ``first`` to point ``stop`` measures: ``(layers,
    slots)``, the layer of each measured span and the stamp slots around them
    (a layer's own slot holds its start, or the point inside it where the
    piece resumed; a stop inside a layer stamps the spare slot)."""
    points, count = net.points, net.layers
    start_layer = points[first].layer
    if stop == len(points):
        last, end = count - 1, count
    elif points[stop].pass_ == 0:
        last, end = points[stop].layer - 1, points[stop].layer
    else:
        last, end = points[stop].layer, stamp_slots(count) - 1
    layers = tuple(range(start_layer, last + 1))
    return layers, tuple(stamp_address(net.stamps, n) for n in layers + (end,))


def piece_image(net, memory, first, stop):
    """The image of the :class:`Resumable` ``net`` from resume point ``first``
    to point ``stop`` (or the end), from ``memory``, the memory at ``first``."""
    starts = net.starts
    config = net.config
    image = np.array(memory, dtype=np.int64)
    gen = CodeGen(config, net.stamps, WeightFrames(align_up(len(image), ALIGN)))
    if stop < len(starts):
        if net.points[stop].pass_ == 0:
            _halt_after_stamp(image, starts[stop], config.fmt.width)
        else:
            gen.lines.append("stop:")
            gen.stamp(stamp_slots(net.layers) - 1)
            gen.emit("halt 0")
    if first > 0:
        gen.lines.append("resume:")
        point = net.points[first]
        gen.resume(point.state)
        if point.pass_:
            gen.stamp(point.layer)
        gen.emit(f"jmp {starts[first]}")
    if not gen.lines:
        return image
    frames = gen.frames
    stub_base = align_up(frames.end, ALIGN)
    assert stub_base % INSTRUCTION_WORDS == 0
    source = render(gen.lines)
    stub = to_words(assemble(source))
    labels = {name: stub_base // INSTRUCTION_WORDS + index for name, index in symbols(source).items()}
    end = stub_base + len(stub)
    if end > config.memory_words:
        raise CompileError(f"piece from point {first}: the resume stub needs memory up to {end} words; "
                           f"grid {net.grid} has {config.memory_words}")
    grown = np.zeros(end, dtype=np.int64)
    grown[:len(image)] = image
    for address, words in frames.blocks:
        grown[address:address + len(words)] = unsigned_words(words, config.fmt.width)
    grown[stub_base:end] = stub
    if "stop" in labels:
        _patch(grown, starts[stop], f"jmp {labels['stop']}\n")
    if "resume" in labels:
        _patch(grown, 0, f"jmp {labels['resume']}\n")
    return grown


def bounds(net, cuts=None):
    """The pieces' ``(first, stop)`` resume points: one piece per point (a
    layer, or a run of a long layer's passes); or, given the layer indices
    ``cuts`` (each in ``1 .. layers - 1``), runs of whole layers between them."""
    count = net.layers
    if not net.points:
        raise CompileError("this compiled network carries no resume points; compile it again")
    if cuts is None:
        edges = list(range(len(net.points)))
    else:
        cuts = sorted(set(cuts))
        if any(not 0 < c < count for c in cuts):
            raise CompileError(f"cuts must lie between layers 1 and {count - 1}, not {cuts}")
        at = {p.layer: n for n, p in enumerate(net.points) if p.pass_ == 0}
        edges = [0] + [at[c] for c in cuts]
    edges.append(len(net.points))
    return list(zip(edges, edges[1:]))


def data_base(net):
    """Where a piece's compared memory begins: above the program and the stamp table."""
    return stamp_address(net.stamps, stamp_slots(net.layers))


def pieces(net, image, cuts=None):
    """``image`` (the :class:`Resumable` ``net``'s image with an input) cut into
    :class:`Piece` s (see :func:`bounds`)."""
    spans = bounds(net, cuts)
    memory = checkpoints(net, image)
    return [Piece(a, b, piece_image(net, memory[a], a, b), memory[b], data_base(net), *segments(net, a, b))
            for a, b in spans]
