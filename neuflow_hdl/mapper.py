"""The piecewise-linear mapper: NeuFlow's non-linearity unit."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .dsp import registered_product
from .numerics import NARROW_STAGES, Q8_8, Format, hdl_half, hdl_narrow_stages, hdl_saturate
from .regs import PoolMode, Symmetry, mapper_config_layout, sample_layout
from .stream import CREDIT_BUFFER_LATENCY, CreditBuffer, activation, delay_line

__all__ = ["Mapper", "MAPPER_LATENCY", "POOL_LATENCY", "mapper_latency"]


#: The mapping alone: eight pipeline stages, then the output buffer (its word
#: leaves from a register).
MAPPER_LATENCY = 8 + CREDIT_BUFFER_LATENCY
#: What the pool stage adds: the pair's sum (or maximum), the waiting pair
#: out of the line buffer, the window's sum, then its narrowing (the rounding
#: increment, the shift, saturation).
POOL_LATENCY = 3 + NARROW_STAGES


def mapper_latency(pooling=False):
    """Cycles from a word's input handshake to ``o.valid``; with the pool stage,
    to the ``o.valid`` of the pooled word its window's last word completes."""
    return MAPPER_LATENCY + (POOL_LATENCY if pooling else 0)


class Mapper(wiring.Component):
    """``y = narrow(a*x + (b << shift), shift)`` on the segment that holds ``x``.

    Segment ``i`` holds ``x`` when ``i`` is the highest index whose ``bound``
    is ``<= x`` (segment 0 when none is).  With ``ODD``/``EVEN`` symmetry the
    segments describe ``x >= 0``: they are looked up with ``|x|`` (saturated)
    and, for ``ODD``, a negative ``x`` gives ``-y`` (saturated).  Flags pass
    through.  One result per cycle; :attr:`latency` cycles from input
    handshake to ``o.valid``.

    Parameters
    ----------
    The **pool stage** (``config.pool``, :class:`~neuflow_hdl.regs.PoolMode`)
    reduces the mapped ``width x height`` frame's 2 x 2 windows at stride 2 (a
    last odd row or column is dropped) to their sum or maximum, narrowed by
    the pool ``shift``, so a layer's pooling costs no pass of its own: the
    mapped words pair up along a row, an even row's pairs wait in a line
    buffer of ``max_width / 2`` words, and each odd row's pair completes a
    window.  Pooled words carry the pooled frame's ``eol``/``eof``.

    Parameters
    ----------
    segments : int
        N, the number of segments (1 .. 32; NeuFlow had 8).
    fmt : Format
    max_width : int
        The widest frame the pool stage takes (its line buffer holds half of it).

    Members
    -------
    config : In(mapper_config_layout(width, segments))
    start : In(1)
        The configuration changes at the end of this cycle; on the next the
        mapper rewinds the pool stage's frame position and takes no word
        (from a register of its own: the strobe reaches no handshake).
    i : In(stream.Signature(sample_layout(width)))
    o : Out(stream.Signature(sample_layout(width)))
    busy : Out(1)
    error : Out(1)
        ``shift`` exceeds the word width, symmetry or pool mode is unknown, or
        the pooled frame is narrower or shorter than 2 or wider than
        ``max_width`` (nothing is accepted).
    """

    def __init__(self, *, segments=8, fmt=Q8_8, max_width=64):
        if not isinstance(segments, int) or not 1 <= segments <= 32:
            raise ValueError(f"segments must be an integer from 1 to 32, not {segments!r}")
        if not isinstance(fmt, Format):
            raise TypeError(f"fmt must be a Format, not {fmt!r}")
        if not isinstance(max_width, int) or max_width < 2 or max_width % 2:
            raise ValueError(f"max_width must be an even integer of at least 2, not {max_width!r}")
        self._segments = segments
        self._fmt = fmt
        self._max_width = max_width
        self._pipeline = MAPPER_LATENCY - CREDIT_BUFFER_LATENCY     # into the output buffer
        sample = stream.Signature(sample_layout(fmt.width))
        super().__init__({
            "config": In(mapper_config_layout(fmt.width, segments)),
            "start": In(1),
            "i": In(sample),
            "o": Out(sample),
            "busy": Out(1),
            "error": Out(1),
        })

    segments = property(lambda self: self._segments)
    fmt = property(lambda self: self._fmt)

    @property
    def latency(self):
        return MAPPER_LATENCY

    def elaborate(self, platform):
        m = Module()
        W, N = self._fmt.width, self._segments
        cfg = self.config
        m.submodules.out = out = CreditBuffer(sample_layout(W), self._pipeline + POOL_LATENCY)
        wiring.connect(m, out.o, wiring.flipped(self.o))

        pool = cfg.pool
        pool_ok = ((pool.mode == PoolMode.NONE) |
                   ((pool.mode.as_value() != 3) & (pool.width >= 2) & (pool.height >= 2) &
                    (pool.width <= self._max_width)))
        # The configuration check off the handshake's path (see activation).
        rewind, cfg_ok, taking = activation(
            m, self.start, (cfg.shift <= W) & (cfg.symmetry.as_value() != 3) & pool_ok)
        m.d.comb += [
            self.error.eq(~cfg_ok),
            self.i.ready.eq(taking & out.credit),
        ]
        fire = self.i.valid & self.i.ready
        meta_layout = data.StructLayout({"valid": 1, "eol": 1, "eof": 1, "negate": 1})
        meta = delay_line(m, meta_layout, self._pipeline)
        m.d.sync += [
            meta[0].valid.eq(fire),
            meta[0].eol.eq(self.i.payload.eol),
            meta[0].eof.eq(self.i.payload.eof),
            meta[0].negate.eq((cfg.symmetry == Symmetry.ODD) & (self.i.payload.data < 0)),
        ]

        # Data registers have no reset, only the valid bits beside them (`meta`).
        # Stage 0: the input word, |x| if symmetric (so no negation is in
        # series with the comparators).  Stage 1: compare with the bounds.
        word = self.i.payload.data
        magnitude = hdl_saturate(Mux(word < 0, -word, word), W)
        x = Signal(signed(W), reset_less=True)
        m.d.sync += x.eq(Mux(cfg.symmetry == Symmetry.NONE, word, magnitude))
        xs = Signal(signed(W), reset_less=True)
        above = Signal(N, reset_less=True)
        m.d.sync += xs.eq(x)
        for n in range(N):
            m.d.sync += above[n].eq(x >= cfg.segments[n].bound[:W].as_signed())

        # Stage 2: the highest segment whose bound is <= x: its slope into the
        # multiplier's input register beside x, its offset into a register.
        slope = cfg.segments[0].slope[:W].as_signed()
        offset_in = cfg.segments[0].offset[:W].as_signed()
        for n in range(1, N):
            slope = Mux(above[n], cfg.segments[n].slope[:W].as_signed(), slope)
            offset_in = Mux(above[n], cfg.segments[n].offset[:W].as_signed(), offset_in)
        offset = Signal(signed(W), reset_less=True)
        m.d.sync += offset.eq(offset_in)
        # Stage 3: the product a*x (a multiplier with its own registers:
        # MULTIPLIER_LATENCY from its factors), beside the offset aligned by
        # the shift with the rounding increment (half an output step, in the
        # aligned offset's zero low bits).  Stage 4: their sum.  Stage 5:
        # shift.  Stage 6: saturate.  Stage 7: odd symmetry.
        product = registered_product(m, platform, slope, xs, meta[1].valid, meta[2].valid, "multiplier")
        aligned = Signal(signed(2 * W), reset_less=True)
        m.d.sync += aligned.eq((offset << cfg.shift)[:2 * W].as_signed() | hdl_half(cfg.shift, W))
        acc = Signal(signed(2 * W + 1), reset_less=True)
        m.d.sync += acc.eq(product + aligned)
        shifted = Signal(signed(2 * W + 1), reset_less=True)
        m.d.sync += shifted.eq(acc >> cfg.shift)
        y = Signal(signed(W), reset_less=True)
        m.d.sync += y.eq(hdl_saturate(shifted, W))
        result = Signal(signed(W), reset_less=True)
        m.d.sync += result.eq(Mux(meta[6].negate, hdl_saturate(-y, W), y))

        last = meta[self._pipeline - 1]
        pooled, pooled_meta, pooling_words = self._pool(m, rewind, last, result)
        pooling = pool.mode != PoolMode.NONE
        m.d.comb += [
            out.i.valid.eq(Mux(pooling, pooled_meta.valid, last.valid)),
            out.i.payload.data.eq(Mux(pooling, pooled, result)),
            out.i.payload.eol.eq(Mux(pooling, pooled_meta.eol, last.eol)),
            out.i.payload.eof.eq(Mux(pooling, pooled_meta.eof, last.eof)),
            self.busy.eq(Cat(stage.valid for stage in meta).any() | pooling_words | out.held),
        ]
        return m

    def _pool(self, m, rewind, last, result):
        """The pool stage after the mapping's last stage (``last``, ``result``):
        (the pooled word, its valid/eol/eof, :data:`POOL_LATENCY` stages on;
        whether a window is on its way through the stage)."""
        W, pool = self._fmt.width, self.config.pool
        is_max = pool.mode == PoolMode.MAX
        # Position of the next mapped word in the frame; the rewind after
        # `start` clears it.
        x = Signal(range(max(self._max_width, 4096)))
        y = Signal(range(4096))
        take = last.valid & (pool.mode != PoolMode.NONE)
        with m.If(rewind):
            m.d.sync += [x.eq(0), y.eq(0)]
        with m.Elif(take):
            with m.If(x == pool.width - 1):
                m.d.sync += x.eq(0)
                m.d.sync += y.eq(Mux(y == pool.height - 1, 0, y + 1))
            with m.Else():
                m.d.sync += x.eq(x + 1)
        even_width = Cat(0, pool.width[1:])
        even_height = Cat(0, pool.height[1:])
        in_window = (x < even_width) & (y < even_height)     # a last odd column or row is dropped
        completes_pair = take & in_window & x[0]

        def reduce(a, b):
            return Mux(is_max, Mux(a > b, a, b), a + b)

        # A row's even word waits; its odd word makes the pair (stage 1).
        first = Signal(signed(W), reset_less=True)
        with m.If(take & ~x[0]):
            m.d.sync += first.eq(result)
        pair = Signal(signed(W + 1), reset_less=True)
        pair_meta = Signal(data.StructLayout({"store": 1, "window": 1, "eol": 1, "eof": 1}))
        row_end = x == even_width - 1
        m.d.sync += [
            pair.eq(reduce(first, result)),
            pair_meta.store.eq(completes_pair & ~y[0]),
            pair_meta.window.eq(completes_pair & y[0]),
            pair_meta.eol.eq(row_end),
            pair_meta.eof.eq(row_end & (y == even_height - 1)),
        ]
        # An even row's pairs wait in the line buffer, read back by the odd row.
        m.submodules.pairs = pairs = memory.Memory(shape=signed(W + 1), depth=self._max_width // 2, init=[])
        write = pairs.write_port()
        read = pairs.read_port(domain="sync")
        address = x[1:][:len(write.addr)]
        pair_address = Signal.like(address)
        m.d.sync += pair_address.eq(address)
        m.d.comb += [write.addr.eq(pair_address), write.data.eq(pair), write.en.eq(pair_meta.store),
                     read.addr.eq(address), read.en.eq(1)]
        # Stage 2: the waiting pair, registered out of the line buffer (its
        # address was on the read port while the pair's odd word was taken, a
        # row after the even row wrote it).  Stage 3: the window.
        waiting = Signal(signed(W + 1), reset_less=True)
        pair2 = Signal(signed(W + 1), reset_less=True)
        m.d.sync += [waiting.eq(read.data), pair2.eq(pair)]
        window = Signal(signed(W + 2), reset_less=True)
        meta = delay_line(m, data.StructLayout({"valid": 1, "eol": 1, "eof": 1}), POOL_LATENCY - 1, name="pool")
        m.d.sync += [
            window.eq(reduce(waiting, pair2)),
            meta[0].valid.eq(pair_meta.window),
            meta[0].eol.eq(pair_meta.eol),
            meta[0].eof.eq(pair_meta.eof),
        ]
        # Stages 4 to 6: the window's narrowing.
        pooled = hdl_narrow_stages(m, window, pool.shift, 15, W, "pooled")
        in_flight = Cat(pair_meta.window, *(stage.valid for stage in meta)).any()
        return pooled, meta[POOL_LATENCY - 2], in_flight
