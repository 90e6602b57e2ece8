"""The memory-side bus shared by the control CPU and the streamer ports.

A simple request/response bus with variable latency.  The initiator sends
commands on ``cmd`` (a ``lib.stream``: ``addr`` is a *beat* address, a beat is
``beat_words`` data words); a write carries ``wdata`` and a per-word
``wmask`` and gets no response; every read gets exactly one ``resp`` beat,
in command order, any number of cycles later.  Word ``n`` of a beat is bits
``n*width .. n*width+width-1`` (little-endian).
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["memory_bus"]


def memory_bus(*, addr_width, beat_words, width=16):
    """The bus signature from the initiator's side."""
    command = data.StructLayout({
        "addr": unsigned(addr_width),
        "we": unsigned(1),
        "wdata": unsigned(beat_words * width),
        "wmask": unsigned(beat_words),
    })
    return wiring.Signature({
        "cmd": Out(stream.Signature(command)),
        "resp": In(stream.Signature(unsigned(beat_words * width))),
    })
