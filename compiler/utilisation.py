"""Where the cycles go: each pass's convolver MAC slots split by cause.

A grid of T tiles with K x K convolvers has ``T * K * K`` MAC slots a cycle.
Over a pass of C cycles (the cost model's :func:`~compiler.cost.pass_cycles`)
its ``C * T * K * K`` slots are split into

* ``useful``: the pass's multiply-accumulates;
* ``border and padding``: slots of the convolvers in use while the data
  stream but that make no output (the border of a valid convolution, kernels
  smaller than K x K, strides, pooling and term-by-term passes);
* ``unused tiles``: convolvers with no work while the data stream;
* ``drain and control``: the pipeline's fill and drain, the instructions in
  series, the polls and the ports' start;
* ``weight frames``: frames streamed alone before the pass, and the frame
  beside the data when it is longer than the data;
* ``memory bus``: cycles the bus's beats add beyond the data.

The split follows the cost model term by term, so the causes add up to the
estimate exactly; the estimate is within 1% of the RTL on ``neuflow-v6``
(docs/compiler.md).  :func:`layer_split` sums a layer's passes.
"""

import math

from .cost import STREAM_OVERHEAD, pass_cycles

__all__ = ["CAUSES", "pass_split", "layer_split", "bus_words"]

CAUSES = ("useful", "border and padding", "unused tiles", "drain and control", "weight frames",
          "memory bus")


def pass_split(p, cost, config):
    """The MAC slots of the pass ``p`` (a :class:`~compiler.schedule.Pass`) whose
    emitted code ``cost`` describes, by cause: a dict over :data:`CAUSES`."""
    slots = config.convolver_macs
    k2 = config.kernel ** 2
    total = pass_cycles(cost)
    data = max(cost.streams)
    fill = data + cost.latency
    frame = max(cost.frame, default=0)
    bus = math.ceil(cost.beats) + cost.overlapped + cost.latency
    frame_excess = max(frame - fill, 0)
    bus_excess = max(bus - max(fill, frame), 0)
    alone = sum(words + STREAM_OVERHEAD for words in cost.alone)
    control = total - data - frame_excess - bus_excess - alone
    used = min(sum(1 for s in p.tiles if s.convolver is not None), config.tiles)
    return {
        "useful": p.macs,
        "border and padding": used * k2 * data - p.macs,
        "unused tiles": (config.tiles - used) * k2 * data,
        "drain and control": control * slots,
        "weight frames": (frame_excess + alone) * slots,
        "memory bus": bus_excess * slots,
    }


def layer_split(layer, config):
    """:func:`pass_split` summed over a compiled :class:`~compiler.artefacts.Layer`."""
    split = dict.fromkeys(CAUSES, 0)
    if not layer.passes:        # a concatenation in place: its stamp and check
        split["drain and control"] = sum(pass_cycles(c) for c in layer.pass_costs) * config.convolver_macs
    for p, cost in zip(layer.passes, layer.pass_costs):
        for cause, value in pass_split(p, cost, config).items():
            split[cause] += value
    return split


def bus_words(layer, config):
    """Words the layer's passes move over the memory bus, in whole beats (the
    streams, the frames beside them and the frames streamed alone)."""
    bw = config.beat_words
    beats = sum(math.ceil(c.beats) + sum(math.ceil(w / bw) for w in c.alone) for c in layer.pass_costs)
    return beats * bw
