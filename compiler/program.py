"""Scheduling and code generation: lowered layers -> passes -> the control program.

Stream layers have one schedule.  A convolution job has several blockings
(:func:`compiler.schedule.conv_packings`); the search ranks them by the cost
model on predicted instruction counts, emits the best of them (up to
:data:`TRIALS`, those predicted within :data:`TRIAL_MARGIN` of the best) into
trial code generators (:meth:`compiler.codegen.CodeGen.fork`), and keeps
the one whose emitted code the cost model finds cheapest.  So the estimate
the search optimises is the estimate the report prints.
"""

from dataclasses import dataclass

from .codegen import CodeGen, WeightFrames
from .cost import pass_cycles, predicted_cost
from .errors import CompileError
from .rolling import render
from .schedule import conv_packings, conv_passes, pass_shape, stream_passes

__all__ = ["TRIALS", "LayerCode", "Program", "generate"]

#: Blockings emitted in trial per convolution job (the best ranked by prediction).
TRIALS = 3
#: Only blockings predicted within this share of the best are emitted in trial.
#: Across the model zoo and scene parsing (at 41989a0) the blockings that won
#: from behind were predicted at most 3.1 % behind the first (one of them 8 %
#: faster as emitted); those further behind never won and were about a tenth of
#: SqueezeNet's passes emitted.
TRIAL_MARGIN = 0.06
#: A job whose best-ranked blocking has more passes than this emits only that
#: one: its passes repeat, so the prediction ranks as the emitted code would.
MANY_PASSES = 1000


@dataclass(frozen=True, eq=False)
class LayerCode:
    """One layer scheduled and emitted."""
    passes: tuple
    costs: tuple            #: the :class:`~compiler.cost.PassCost` of each pass as emitted
    blockings: tuple        #: the chosen blocking of each convolution job, for the report

    @property
    def pass_cycles(self):
        """Estimated cycles of each pass (the cost model on the emitted code)."""
        return tuple(pass_cycles(c) for c in self.costs)

    @property
    def cycles(self):
        return sum(self.pass_cycles)


@dataclass(frozen=True, eq=False)
class Program:
    """The control program (assembly source), per-layer code, the weight frames,
    and the places it can be resumed from."""
    source: str
    layers: tuple
    frames: WeightFrames
    points: tuple           #: its :class:`~compiler.codegen.ResumePoint` s, in program order


def _blocking_name(length):
    if isinstance(length, tuple):
        return f"blocking: chains of up to {length[1]} terms sharing input maps"
    return f"blocking: chains of up to {length} terms"


#: A blocking of at least twice this many passes is ranked by an even sample
#: of about this many of them (its passes repeat; the first always counts).
RANK_SAMPLE = 256


def _predicted(job, packing, config):
    """Predicted cycles of a blocking (``(passes, groups)``: chains of each pass,
    chains of each output)."""
    passes, groups = packing
    step = max(1, len(passes) // RANK_SAMPLE)
    cycles = lambda n: pass_cycles(predicted_cost(pass_shape(job, passes[n], config, groups), config,
                                                  first=n == 0))
    if step == 1:
        return sum(cycles(n) for n in range(len(passes)))
    sample = range(step, len(passes), step)
    return cycles(0) + sum(cycles(n) for n in sample) * (len(passes) - 1) / len(sample)


def _ranked(job, config):
    """The blockings of ``job`` best first by predicted cycles: ``[(predicted, name, packing)]``."""
    ranked = []
    for length, packing in conv_packings(job, config).items():
        predicted = _predicted(job, packing, config)
        ranked.append((predicted, len(ranked), _blocking_name(length), packing))
    if not ranked:
        raise CompileError("no blocking of this layer fits the grid")
    ranked.sort(key=lambda r: r[:2])
    return [(predicted, name, packing) for predicted, _, name, packing in ranked]


def _trials(ranked):
    """The blockings to emit in trial: the best ranked, and those ranked after it
    by less than :data:`TRIAL_MARGIN` (up to :data:`TRIALS` in all; one when the
    best has more than :data:`MANY_PASSES` passes)."""
    best, _, (passes, _) = ranked[0]
    if len(passes) > MANY_PASSES:
        return ranked[:1]
    return [r for r in ranked[:TRIALS] if r[0] <= best * (1 + TRIAL_MARGIN)]


def _emit(gen, title, passes):
    """Emit a layer into a fork of ``gen``: (trial, per-pass costs, their cycles)."""
    trial = gen.fork()
    costs = tuple(trial.emit_layer(title, passes))
    return trial, costs, sum(pass_cycles(c) for c in costs)


def schedule_layer(gen, title, lowered, config, window):
    """Schedule one lowered layer and emit it into ``gen``; a :class:`LayerCode`.
    Each convolution job in turn keeps the trial blocking whose code (with the
    jobs before it) costs least."""
    if not lowered.convolutions:          # one schedule: no trials
        passes = stream_passes(list(lowered.jobs), config, window)
        return LayerCode(tuple(passes), tuple(gen.emit_layer(title, passes)), ())
    chosen, blockings = [], []
    for job in lowered.jobs:
        best = None
        for _, name, packing in _trials(_ranked(job, config)):
            passes = chosen + conv_passes(job, config, window, packing)
            trial, costs, cycles = _emit(gen, title, passes)
            if best is None or cycles < best[3]:
                best = (passes, trial, costs, cycles, name)
        chosen = best[0]
        blockings.append(best[4])
    gen.adopt(best[1])
    return LayerCode(tuple(chosen), best[2], tuple(blockings))


def generate(graph, lowered, buffers, config, stamps, frames_base, *, progress=None):
    """The code-generation stage: every layer scheduled and emitted; a :class:`Program`.
    ``lowered``: a :class:`~compiler.lower.Lowered` per node of ``graph``;
    ``stamps``: the cycle-stamp table's address; weight frames from ``frames_base``;
    ``progress``: called as ``progress(layers done, layers)`` after each layer."""
    gen = CodeGen(config, stamps, WeightFrames(frames_base))
    gen.begin()
    layers = []
    for node, low in zip(graph.nodes, lowered):
        window = (buffers[node.output].base, buffers[node.output].size)
        title = f"{node.name} ({node.onnx_op})"
        layers.append(schedule_layer(gen, title, low, config, window))
        if progress:
            progress(len(layers), len(graph.nodes))
    gen.end()
    return Program(render(gen.lines), tuple(layers), gen.frames, tuple(gen.points))
