"""Stream building blocks shared by every operator.

* :class:`StreamFIFO` -- a ``lib.stream`` FIFO (a ``SyncFIFOBuffered`` wrapped as
  a component), used on every operator input and tile output.
* :class:`BlockRamFIFO` -- a deep StreamFIFO whose words leave from
  registers, not from its block RAM's output (the FIFO bank).
* :class:`PushedFIFO` -- a FIFO behind an input register whose ``ready`` is
  a registered credit, which takes every word offered; :class:`SinkFIFO`,
  one written by a router's fork (every sink of a tile).
* :class:`CreditPusher` -- a SinkFIFO whose words leave from a register on
  a registered credit, into a PushedFIFO across the die (a tile to the
  grid's global output line): no path runs from one end's logic to the
  other's.
* :class:`CreditBuffer` -- the output stage of a pipelined operator.  Operators
  here never stall their pipelines: a word enters only when the buffer grants
  a credit, i.e. when there is guaranteed room for it on arrival however long
  downstream withholds ``ready``.  Back-pressure therefore reaches the input
  without a combinational stall signal fanning out to every pipeline register.
"""

from amaranth.hdl import Cat, Module, Shape, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamFIFO", "FIFO_LATENCY", "BlockRamFIFO", "BLOCK_RAM_FIFO_LATENCY", "PushedFIFO",
           "PUSHED_FIFO_LATENCY", "SinkFIFO", "CreditPusher", "CREDIT_PUSHER_LATENCY", "CreditBuffer",
           "CREDIT_BUFFER_LATENCY",
           "full_rate_depth", "delay_line", "replica", "replicas", "activation"]


def replica(shape=1, **kwargs):
    """A register that synthesis must not merge with an equal one elsewhere.

    A strobe registered once per user (every operator's ``rewind`` takes the
    tile's ``start``) is a set of flip-flops with the same input, and yosys
    merges such flip-flops into one, whose net then crosses the tile again:
    measured on the ``ulx3s-85f`` grid, the convolver's and the mapper's
    rewinds had become the ALU's.  Its wire carries ``keep``, which the
    synthesis flows move onto the flip-flop (``boards.synth.KEEP_REPLICAS``),
    where ``opt_merge`` leaves it alone.  ``kwargs`` go to ``Signal``.
    """
    return Signal(shape, attrs={"keep": 1}, **kwargs)


def replicas(m, value, copies, name, shape=1, **kwargs):
    """``copies`` registers of ``value`` (``m.d.sync``, in the caller's
    conditions), kept apart (:func:`replica`): one register for each group of
    users of a value whose single register's nets were a critical path.
    ``name_<n>`` each; ``kwargs`` go to ``Signal``."""
    registers = [replica(shape, name=f"{name}_{n}", **kwargs) for n in range(copies)]
    m.d.sync += [register.eq(value) for register in registers]
    return registers


def delay_line(m, layout, depth, name="meta"):
    """``depth`` registers of ``layout``, each a copy of the previous one a cycle
    later: the side band (valid bit, flags) travelling beside a pipeline's
    data.  The caller drives entry 0."""
    stages = [Signal(layout, name=f"{name}_{n}") for n in range(depth)]
    for n in range(1, depth):
        m.d.sync += stages[n].eq(stages[n - 1])
    return stages


def activation(m, start, runnable, copies=1):
    """An operator's answer to its tile's ``start`` (the cycle the tile's
    configuration registers take a new configuration), as three registers
    ``(rewind, cfg_ok, taking)``: ``rewind``, high on the next cycle, when
    the operator rewinds (reset-less: a flush with the start keeps it);
    ``cfg_ok``, ``runnable`` (the operator's configuration check) a cycle
    old; ``taking``, the same but low on the rewind's cycle, when no word
    may enter.  An input ``ready`` built on ``taking`` sees flip-flops:
    neither the strobe's net across the tile nor a comparison with the
    configuration.  ``taking`` has ``copies`` bits, registers of the same
    value kept apart (:func:`replica`), for a handshake computed in more than
    one place."""
    rewind = replica(reset_less=True, name="rewind")
    cfg_ok = Signal(name="cfg_ok")
    m.d.sync += [rewind.eq(start), cfg_ok.eq(runnable)]
    if copies == 1:
        taking = Signal(name="taking")
        m.d.sync += taking.eq(runnable & ~start)
        return rewind, cfg_ok, taking
    return rewind, cfg_ok, Cat(replicas(m, runnable & ~start, copies, "taking"))


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

    #: The least depth that keeps full rate.
    min_depth = 3

    def __init__(self, shape, depth):
        if not isinstance(depth, int) or depth < self.min_depth:
            raise ValueError(f"FIFO depth must be an integer of at least {self.min_depth} (full rate), "
                             f"not {depth!r}")
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


#: :attr:`BlockRamFIFO.latency`: the deep StreamFIFO, then the shallow one.
BLOCK_RAM_FIFO_LATENCY = 2 * FIFO_LATENCY


class BlockRamFIFO(StreamFIFO):
    """A :class:`StreamFIFO` of ``depth - 3`` words (block RAM where the
    target has it) followed by one of 3 words (registers), so that a word
    leaves from a flip-flop: a block RAM's output takes much of a clock
    period to settle (5.8 ns on an ECP5's DP16KD), too long to cross a
    router's multiplexer after it, and the shallow FIFO's ``ready`` decides
    when the RAM is read, so the consumer's ``ready`` never reaches the
    RAM's enable.  Members as :class:`StreamFIFO`'s; ``level`` counts both.
    """

    #: The shallow FIFO's words: the fewest that keep full rate.
    output_depth = StreamFIFO.min_depth
    min_depth = 2 * StreamFIFO.min_depth

    @property
    def latency(self):
        """Cycles from a word's handshake at ``i`` to ``o.valid`` when empty."""
        return BLOCK_RAM_FIFO_LATENCY

    def elaborate(self, platform):
        m = Module()
        m.submodules.deep = deep = StreamFIFO(self._shape, self._depth - self.output_depth)
        m.submodules.out = out = StreamFIFO(self._shape, self.output_depth)
        wiring.connect(m, wiring.flipped(self.i), deep.i)
        wiring.connect(m, deep.o, out.i)
        wiring.connect(m, out.o, wiring.flipped(self.o))
        m.d.comb += self.level.eq(deep.level + out.level)
        return m


#: :attr:`PushedFIFO.latency`: the input register, then a StreamFIFO.
PUSHED_FIFO_LATENCY = 1 + FIFO_LATENCY


def full_rate_depth(lag):
    """The fewest words with which a :class:`PushedFIFO` keeps full rate when
    its writer may push ``lag`` words its credit did not count: at full rate
    a word spends a cycle in the input register, one in the storage and one
    in the output register, so 3 are held besides."""
    return lag + 3


class PushedFIFO(StreamFIFO):
    """A FIFO behind an input register whose ``i.ready`` is a registered
    credit: room for every word its writer may push before the credit
    counts it (:attr:`lag` words), and a word offered with ``i.valid`` is
    taken whatever ``i.ready`` says then.  So neither the writer's logic nor
    the credit shares a timing path with the FIFO's storage, and the writer
    decides from flip-flops alone.

    This one is the far end of a stream across the die, written by a
    :class:`CreditPusher` that registers the credit again and pushes from a
    register of its own: four words may be on their way.  It keeps full
    rate from a depth of 7: a word spends a cycle in the register, one in
    the storage and one in its output register, and four more may be on
    their way.  Subclasses set :attr:`lag`, :attr:`storage` (the FIFO class
    behind the register) and :attr:`min_depth`.  Members as
    :class:`StreamFIFO`'s; ``level`` counts the register's word.
    """

    #: Words the writer may push that the credit has not counted: it was
    #: computed from the level a cycle before it is seen.
    lag = 4
    storage = StreamFIFO
    min_depth = full_rate_depth(lag)

    @property
    def latency(self):
        """Cycles from a word pushed at ``i`` to ``o.valid`` when empty."""
        return PUSHED_FIFO_LATENCY

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = buf = self.storage(self._shape, self._depth)
        held = Signal()
        word = Signal.like(self.i.payload)
        credit = Signal(init=1)         # empty
        m.d.sync += [held.eq(self.i.valid), word.eq(self.i.payload),
                     credit.eq(self.level <= self._depth - self.lag)]
        m.d.comb += [
            buf.i.valid.eq(held),
            buf.i.payload.eq(word),
            self.i.ready.eq(credit),
            self.level.eq(buf.level + held),
        ]
        wiring.connect(m, buf.o, wiring.flipped(self.o))
        return m


class SinkFIFO(PushedFIFO):
    """A :class:`PushedFIFO` written by a router's fork inside a tile.  The
    fork moves a word on a register of its readers' credits (the AND of
    them a cycle before), so three words are uncounted by the credit it
    read: the ones moved in the cycle the credit was computed, in the cycle
    the fork took it and on it.  As every PushedFIFO it takes each word
    offered with ``i.valid``: its writer has already decided.  Full rate
    from a depth of 6.
    """

    lag = 3
    min_depth = full_rate_depth(lag)


#: :attr:`CreditPusher.latency`: its SinkFIFO, then its output register.
CREDIT_PUSHER_LATENCY = PUSHED_FIFO_LATENCY + 1


class CreditPusher(wiring.Component):
    """A :class:`SinkFIFO` whose words leave from a register on a registered
    credit, for a stream that crosses the die into a :class:`PushedFIFO`:
    ``o.ready`` is the receiver's credit (taken into a register here, so it
    reaches no logic but this FIFO's read enable), and a word is pushed with
    ``o.valid``, whatever ``o.ready`` says then.  Nothing combinational runs
    from the receiver to the writer of ``i`` or back.

    Members
    -------
    i : In(stream.Signature(shape))
        The SinkFIFO's (``ready`` a registered credit).
    o : Out(stream.Signature(shape))
    level : Out(range(depth + 2))
        Words held, the output register's included.
    """

    def __init__(self, shape, depth):
        self._fifo = SinkFIFO(shape, depth)
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "level": Out(range(depth + 2)),
        })

    @property
    def latency(self):
        """Cycles from a word's handshake at ``i`` to ``o.valid`` when empty (and credited)."""
        return CREDIT_PUSHER_LATENCY

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = buf = self._fifo
        wiring.connect(m, wiring.flipped(self.i), buf.i)
        credit = Signal()
        m.d.sync += [credit.eq(self.o.ready), self.o.valid.eq(buf.o.valid & credit),
                     self.o.payload.eq(buf.o.payload)]
        m.d.comb += [buf.o.ready.eq(credit), self.level.eq(buf.level + self.o.valid)]
        return m


#: A :class:`CreditBuffer`'s cycles from a word written to it (empty) to
#: ``o.valid``: its storage, then its output register.
CREDIT_BUFFER_LATENCY = 2


class CreditBuffer(wiring.Component):
    """Output buffer of a non-stalling pipeline of ``latency`` cycles.

    ``credit`` is high when a word may enter the pipeline this cycle: the
    buffer has room for it and for every word already in flight.  It is a
    register (the pipeline's input handshake is an AND of registers), set
    from the level a cycle old, so it leaves room for one word more than
    the pipeline holds: with ``depth = latency + threshold + 1`` a consumer
    that is always ready sees one word per cycle, and one that starts taking
    words up to ``slack`` cycles late still does.  ``i.valid`` is a write
    that must never be refused (``i.ready`` is tied high; the credit rule
    guarantees room).

    A word leaves from a register (a ``SyncFIFOBuffered``: a cycle more,
    :data:`CREDIT_BUFFER_LATENCY` in all), not from the storage's read: LUT RAM
    on an FPGA, whose read would otherwise start the path through a router's
    multiplexer into a FIFO across the tile, or block RAM, whose read takes
    several nanoseconds from the clock.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    credit : Out(copies)
        The credit register ``copies`` times, kept apart (:func:`replica`),
        for a handshake computed in more than one place.
    held : Out(1)
        A word is in the buffer (its storage or its output register).
    """

    def __init__(self, shape, latency, slack=0, copies=1):
        self._shape = shape
        self._latency = latency
        self._copies = copies
        #: ``credit`` is set while the level is below this: at full rate the
        #: buffer holds the word being written and one for each cycle of its
        #: latency, and ``slack`` more while its consumer is late.
        self._threshold = self.latency + 1 + slack
        #: Room for those, for one word more written before the credit (a
        #: cycle old) is seen, and for the ``latency`` words in flight after it.
        self._depth = self._threshold + 1 + latency
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "credit": Out(copies),
            "held": Out(1),
        })

    @property
    def latency(self):
        """Cycles from a word written to the (empty) buffer to ``o.valid``."""
        return CREDIT_BUFFER_LATENCY

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=Shape.cast(self._shape).width, depth=self._depth)
        m.d.comb += [
            buf.w_data.eq(self.i.payload),
            buf.w_en.eq(self.i.valid),
            self.i.ready.eq(1),
            self.o.payload.eq(buf.r_data),
            self.o.valid.eq(buf.r_rdy),
            buf.r_en.eq(self.o.ready),
            self.held.eq(buf.level != 0),
        ]
        room = buf.level < self._threshold
        if self._copies == 1:
            credit = Signal(init=1, name="credit_r")       # empty after reset
            m.d.sync += credit.eq(room)
            m.d.comb += self.credit.eq(credit)
        else:
            m.d.comb += self.credit.eq(Cat(replicas(m, room, self._copies, "credit_r", init=1)))
        return m
