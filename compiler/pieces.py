"""A compiled network cut into pieces that run on their own.

A piece is a run of consecutive layers ``first .. stop - 1``.  Its memory
image is the memory at the start of layer ``first`` as the reference engine
computes it (a checkpoint), with two changes:

* when ``first > 0``, the first instruction jumps to a resume stub placed
  above the image (:meth:`compiler.codegen.CodeGen.resume`): it brings the
  machine from reset to the state layer ``first``'s code was generated for
  (the configuration registers as written, the kernels the tiles hold) and
  jumps to the layer's label;
* when ``stop`` is not the end, the instruction after layer ``stop``'s cycle
  stamp becomes ``halt 0``.

So a piece runs exactly the code of its layers, between the same cycle
stamps; after it halts, every word of data memory equals the reference
engine's memory at the start of layer ``stop`` (or at the end).  The stub's
cycles fall before the first stamp and are not counted.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuflow_hdl.isa import INSTRUCTION_WORDS, Opcode, decode
from neuflow_hdl.numerics import unsigned_words
from neuflow_hdl.presets import preset
from sim.golden.asm import AsmError, assemble, from_words, symbols, to_words
from sim.golden.engine import run_program

from .artefacts import PROGRAM, STATES, load_compiled
from .codegen import CodeGen, MachineState, WeightFrames, layer_label
from .errors import CompileError
from .layout import ALIGN, align_up

__all__ = ["Resumable", "Piece", "layer_starts", "checkpoints", "piece_image", "pieces",
           "load_resumable"]


@dataclass(frozen=True, eq=False)
class Resumable:
    """What cutting a compiled network into pieces needs: its grid, its program
    (assembly source, for the layers' labels), the cycle-stamp table, the
    manifest and image, and the :class:`~compiler.codegen.MachineState` each
    layer's code starts from."""
    grid: str
    config: object
    source: str
    stamps: int
    entries: tuple
    manifest: dict
    image: np.ndarray

    @classmethod
    def of(cls, compiled):
        """The :class:`Resumable` of a :class:`~compiler.artefacts.Compiled`."""
        return cls(compiled.grid, compiled.config, compiled.source, compiled.stamps, compiled.entries,
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
    layers = len(manifest["layers"])
    if not isinstance(states, list) or len(states) != layers:
        raise CompileError(f"{d / STATES}: not one machine state per layer ({layers}); compile again")
    try:
        entries = tuple(MachineState.from_json(state, config) for state in states)
    except ValueError as exc:
        raise CompileError(f"{d / STATES}: {exc}; compile again") from None
    return Resumable(manifest["grid"], config, source, manifest["stamps"], entries, manifest, image)


@dataclass(frozen=True, eq=False)
class Piece:
    first: int                      #: the first layer
    stop: int                       #: one past the last layer
    image: np.ndarray               #: the memory image that runs it from reset
    expected: np.ndarray            #: the reference memory when it halts (the image's extent)
    data_base: int                  #: the words from here up are compared (below: program, stamps)


def layer_starts(net):
    """The instruction index of each layer's first instruction (``net``: a :class:`Resumable`)."""
    try:
        labels = symbols(net.source)
        return [labels[layer_label(n)] for n in range(len(net.entries))]
    except (AsmError, KeyError) as exc:
        raise CompileError(f"the program does not label its layers ({exc}); compile again") from None


def checkpoints(net, image):
    """The reference engine's memory at the start of every layer and at halt:
    a list of ``layers + 1`` arrays (unsigned words)."""
    starts = layer_starts(net)
    taken = dict.fromkeys(starts)
    final, halt, _ = run_program(image, net.config, snapshots=taken)
    if halt != 0:
        raise CompileError(f"the program halted with code {halt:#x} on the reference engine")
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


def piece_image(net, memory, first, stop):
    """The image of layers ``first .. stop - 1`` of the :class:`Resumable`
    ``net`` from ``memory``, the memory at the start of layer ``first``."""
    starts = layer_starts(net)
    config = net.config
    image = np.array(memory, dtype=np.int64)
    if stop < len(starts):
        _halt_after_stamp(image, starts[stop], config.fmt.width)
    if first == 0:
        return image
    gen = CodeGen(config, net.stamps, WeightFrames(align_up(len(image), ALIGN)))
    gen.resume(net.entries[first])
    gen.emit(f"jmp {starts[first]}")
    frames = gen.frames
    stub_base = align_up(frames.end, ALIGN)
    stub = to_words(assemble("\n".join(gen.lines) + "\n"))
    end = stub_base + len(stub)
    if end > config.memory_words:
        raise CompileError(f"piece from layer {first}: the resume stub needs memory up to {end} words; "
                           f"grid {net.grid} has {config.memory_words}")
    grown = np.zeros(end, dtype=np.int64)
    grown[:len(image)] = image
    for address, words in frames.blocks:
        grown[address:address + len(words)] = unsigned_words(words, config.fmt.width)
    grown[stub_base:end] = stub
    _patch(grown, 0, f"jmp {stub_base // INSTRUCTION_WORDS}\n")
    return grown


def pieces(net, image, cuts=None):
    """``image`` (the :class:`Resumable` ``net``'s image with an input) cut into
    :class:`Piece` s: one per layer, or between the layer indices ``cuts``
    (sorted, each in ``1 .. layers - 1``)."""
    count = len(net.entries)
    if not count:
        raise CompileError("this compiled network carries no machine states; compile it again")
    cuts = list(range(1, count)) if cuts is None else sorted(set(cuts))
    if any(not 0 < c < count for c in cuts):
        raise CompileError(f"cuts must lie between layers 1 and {count - 1}, not {cuts}")
    memory = checkpoints(net, image)
    bounds = [0] + cuts + [count]
    return [Piece(a, b, piece_image(net, memory[a], a, b), memory[b], net.stamps + 2 * (count + 2))
            for a, b in zip(bounds, bounds[1:])]
