"""The FIFO bank: a tile's configurable stream buffering."""

from amaranth.hdl import Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .numerics import Q8_8
from .regs import sample_layout
from .stream import BLOCK_RAM_FIFO_LATENCY, BlockRamFIFO, SinkFIFO

__all__ = ["FifoBank", "BankFIFO", "BANK_FIFO_LATENCY"]

#: :attr:`BankFIFO.latency`: the input register, then a BlockRamFIFO.
BANK_FIFO_LATENCY = 1 + BLOCK_RAM_FIFO_LATENCY


class BankFIFO(SinkFIFO):
    """A :class:`SinkFIFO` whose storage is a :class:`BlockRamFIFO`: a router's
    sink of many words (block RAM), written through a register on a
    registered credit, read from registers."""

    storage = BlockRamFIFO
    min_depth = max(SinkFIFO.min_depth, BlockRamFIFO.min_depth)

    @property
    def latency(self):
        """Cycles from a word pushed at ``i`` to ``o.valid`` when empty."""
        return BANK_FIFO_LATENCY


class FifoBank(wiring.Component):
    """``count`` stream FIFOs of ``depth`` words each, optionally chained.

    NeuFlow's tiles held up to 10 kB of FIFOs to absorb the latency
    differences between the branches of a computation.  Here bit ``n`` of
    ``chain`` (``n >= 1``) feeds FIFO ``n`` from FIFO ``n-1`` instead of from
    input ``n`` (which then accepts nothing, and output ``n-1`` offers
    nothing), so one stream can be given up to ``count * depth - (count -
    1)`` words of buffering (a chained FIFO fills to a word short of its
    depth: its credit allows for the router fork's lag, a cycle longer than
    the chain's, which reads the credit itself).  Change ``chain`` only
    while the bank is empty.  Each FIFO is a :class:`BankFIFO`: a router's
    sink (``i[n].ready`` a registered credit; a word offered with
    ``i[n].valid`` is taken), its words leaving from registers.

    Members
    -------
    chain : In(count)
    i : In(stream.Signature(sample_layout(width))).array(count)
    o : Out(stream.Signature(sample_layout(width))).array(count)
    level : Out(range(depth + 1)).array(count)
    """

    def __init__(self, *, count=2, depth=64, fmt=Q8_8):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, not {count!r}")
        if not isinstance(depth, int) or depth < BankFIFO.min_depth:
            raise ValueError(f"depth must be an integer of at least {BankFIFO.min_depth}, not {depth!r}")
        self._count, self._depth, self._fmt = count, depth, fmt
        sample = stream.Signature(sample_layout(fmt.width))
        super().__init__({
            "chain": In(count),
            "i": In(sample).array(count),
            "o": Out(sample).array(count),
            "level": Out(range(depth + 1)).array(count),
        })

    count = property(lambda self: self._count)
    depth = property(lambda self: self._depth)

    def elaborate(self, platform):
        m = Module()
        fifos = []
        for n in range(self._count):
            fifo = BankFIFO(sample_layout(self._fmt.width), self._depth)
            m.submodules[f"fifo_{n}"] = fifo
            fifos.append(fifo)
            m.d.comb += self.level[n].eq(fifo.level)
        for n, fifo in enumerate(fifos):
            chained = self.chain[n] if n > 0 else 0
            source = self.i[n]
            if n > 0:
                prev = fifos[n - 1]
                # FIFO n takes every word offered: a chained word only as it moves.
                m.d.comb += [
                    fifo.i.valid.eq(Mux(chained, prev.o.valid & fifo.i.ready, source.valid)),
                    fifo.i.payload.eq(Mux(chained, prev.o.payload, source.payload)),
                    source.ready.eq(~chained & fifo.i.ready),
                ]
            else:
                m.d.comb += [fifo.i.valid.eq(source.valid), fifo.i.payload.eq(source.payload),
                             source.ready.eq(fifo.i.ready)]
            # Output n is silent when FIFO n+1 takes its words.
            taken = self.chain[n + 1] if n + 1 < self._count else 0
            if n + 1 < self._count:
                m.d.comb += fifo.o.ready.eq(Mux(taken, fifos[n + 1].i.ready, self.o[n].ready))
            else:
                m.d.comb += fifo.o.ready.eq(self.o[n].ready)
            m.d.comb += [self.o[n].valid.eq(fifo.o.valid & ~taken), self.o[n].payload.eq(fifo.o.payload)]
        return m
