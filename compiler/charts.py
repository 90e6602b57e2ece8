"""The report's pictures (matplotlib): where each layer's cycles go, and each
layer against the grid's two limits.

* :func:`cycles_chart`: one bar per layer, its estimated cycles split by the
  causes of :mod:`compiler.utilisation` (a cause's share of the layer's MAC
  slots, in cycles);
* :func:`roofline_chart`: each layer's useful MACs per cycle against its
  arithmetic intensity (MACs per word over the memory bus), under the MAC
  bound (every convolver's K x K multipliers) and the bus bound (one beat of
  ``beat_words`` words a cycle).

Figures are made without pyplot, so none outlives its file, and drawn with
warnings silenced: a picture whose labels do not fit (long names from the
model) is still written, and is no reason to warn.
"""

import warnings

from matplotlib.figure import Figure

from .ir import printable
from .utilisation import CAUSES, bus_words, layer_split

__all__ = ["cycles_chart", "roofline_chart", "COLOURS"]

COLOURS = dict(zip(CAUSES, ("#2b8a3e", "#94d82d", "#ced4da", "#f08c00", "#1c7ed6", "#c92a2a")))


def _plain(text):
    """``text`` as a label: printable ASCII only (names come from the model: no
    glyph a font may lack, no '$' that starts matplotlib's maths)."""
    return printable(text).encode("ascii", "backslashreplace").decode().replace("$", r"\$")


def _label(layer):
    return _plain(layer.name if len(layer.name) <= 18 else layer.name[:17] + "...")


def _save(fig, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.savefig(path, dpi=100)


def cycles_chart(layers, config, path, title):
    """Stacked bars of each layer's cycles by cause, written to ``path`` (PNG)."""
    slots = config.convolver_macs
    splits = [layer_split(layer, config) for layer in layers]
    fig = Figure(figsize=(max(6.0, 0.6 * len(layers) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    bottom = [0.0] * len(layers)
    positions = range(len(layers))          # by position: two layers may share a name
    for cause in CAUSES:
        heights = [split[cause] / slots for split in splits]
        ax.bar(positions, heights, bottom=bottom, label=cause, color=COLOURS[cause])
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xticks(positions, [_label(layer) for layer in layers], rotation=45, ha="right")
    ax.set_ylabel("cycles (estimated)")
    ax.set_title(_plain(title))
    ax.legend(fontsize="small")
    _save(fig, path)


def roofline_chart(layers, config, path, title):
    """Each layer's useful MACs per cycle against its MACs per bus word, under
    the grid's MAC bound and its memory bus's bound; written to ``path``."""
    peak = config.convolver_macs
    points = []
    for layer in layers:
        words = bus_words(layer, config)
        if layer.macs and words and layer.cycles:
            points.append((layer.macs / words, layer.macs / layer.cycles, _label(layer)))
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    lowest = min([p[0] for p in points] + [peak / config.beat_words / 100])
    highest = max([p[0] for p in points] + [peak / config.beat_words * 10])
    xs = [lowest / 2, peak / config.beat_words, highest * 2]
    ax.plot(xs, [min(peak, x * config.beat_words) for x in xs], color="black", linewidth=1.5,
            label=f"bounds: {peak} MACs/cycle; {config.beat_words} words/cycle over the bus")
    for n, (intensity, rate, name) in enumerate(points):
        ax.scatter(intensity, rate, color=COLOURS["useful"], zorder=3)
        # Labels alternate above and below their points: neighbours rarely overlap.
        ax.annotate(name, (intensity, rate), textcoords="offset points",
                    xytext=(5, 5 if n % 2 == 0 else -12), fontsize="small")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (MACs per word over the memory bus)")
    ax.set_ylabel("useful MACs per cycle (estimated)")
    ax.set_title(_plain(title))
    ax.legend(fontsize="small", loc="lower right")
    _save(fig, path)
