"""Stream building blocks shared by every operator.

* :class:`StreamFIFO` -- a ``lib.stream`` FIFO (a ``SyncFIFOBuffered`` wrapped as
  a component), used on every operator input and in the FIFO bank.
* :class:`CreditBuffer` -- the output stage of a pipelined operator.  Operators
  here never stall their pipelines: a word enters only when the buffer grants
  a credit, i.e. when there is guaranteed room for it on arrival however long
  downstream withholds ``ready``.  Back-pressure therefore reaches the input
  without a combinational stall signal fanning out to every pipeline register.
"""

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamFIFO", "FIFO_LATENCY", "CreditBuffer", "delay_line"]


def delay_line(m, layout, depth, name="meta"):
    """``depth`` registers of ``layout``, each a copy of the previous one a cycle
    later: the side band (valid bit, flags) travelling beside a pipeline's
    data.  The caller drives entry 0."""
    stages = [Signal(layout, name=f"{name}_{n}") for n in range(depth)]
    for n in range(1, depth):
        m.d.sync += stages[n].eq(stages[n - 1])
    return stages


#: :attr:`StreamFIFO.latency` (a ``SyncFIFOBuffered``: its storage, then its output register).
FIFO_LATENCY = 2


class StreamFIFO(wiring.Component):
    """First-in first-out buffer between two streams.

    Parameters
    ----------
    shape : shape-like
        Payload shape.
    depth : int
        Capacity in words (block RAM backed where the target allows it); at
        least 3, because a ``SyncFIFOBuffered`` of 2 (a 1-entry FIFO and an
        output register) cannot take and give a word in the same cycle and
        would halve the stream's rate.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    level : Out(range(depth + 1))
        Words held.
    """

    def __init__(self, shape, depth):
        if not isinstance(depth, int) or depth < 3:
            raise ValueError(f"FIFO depth must be an integer of at least 3 (full rate), not {depth!r}")
        self._shape = shape
        self._depth = depth
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "level": Out(range(depth + 1)),
        })

    @property
    def depth(self):
        return self._depth

    @property
    def latency(self):
        """Cycles from a word's handshake at ``i`` to ``o.valid`` when empty."""
        return FIFO_LATENCY

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=Shape.cast(self._shape).width,
                                                         depth=self._depth)
        m.d.comb += [
            buf.w_data.eq(self.i.payload),
            buf.w_en.eq(self.i.valid),
            self.i.ready.eq(buf.w_rdy),
            self.o.payload.eq(buf.r_data),
            self.o.valid.eq(buf.r_rdy),
            buf.r_en.eq(self.o.ready),
            self.level.eq(buf.level),
        ]
        return m


class CreditBuffer(wiring.Component):
    """Output buffer of a non-stalling pipeline of ``latency`` cycles.

    ``credit`` is high when a word may enter the pipeline this cycle: the
    buffer has room for it and for every word already in flight.  With
    ``depth = latency + 2 + slack`` a consumer that is always ready sees one
    word per cycle, and one that starts taking words up to ``slack`` cycles
    late still does.  ``i.valid`` is a write that must never be refused (``i.ready`` is
    tied high; the credit rule guarantees room).

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    credit : Out(1)
    """

    def __init__(self, shape, latency, slack=0):
        self._shape = shape
        self._latency = latency
        self._depth = latency + 2 + slack
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "credit": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = buf = fifo.SyncFIFO(width=Shape.cast(self._shape).width,
                                                 depth=self._depth)
        m.d.comb += [
            buf.w_data.eq(self.i.payload),
            buf.w_en.eq(self.i.valid),
            self.i.ready.eq(1),
            self.o.payload.eq(buf.r_data),
            self.o.valid.eq(buf.r_rdy),
            buf.r_en.eq(self.o.ready),
            # Up to `latency` words may already be in flight toward the buffer.
            self.credit.eq(buf.level < self._depth - self._latency),
        ]
        return m
