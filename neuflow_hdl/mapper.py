"""The piecewise-linear mapper: NeuFlow's non-linearity unit."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .numerics import Q8_8, Format, hdl_half, hdl_saturate
from .regs import Symmetry, mapper_config_layout, sample_layout
from .stream import CreditBuffer, delay_line

__all__ = ["Mapper", "MAPPER_LATENCY"]


#: :attr:`Mapper.latency`: six pipeline stages, then the output buffer.
MAPPER_LATENCY = 7


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
    segments : int
        N, the number of segments (1 .. 32; NeuFlow had 8).
    fmt : Format

    Members
    -------
    config : In(mapper_config_layout(width, segments))
    i : In(stream.Signature(sample_layout(width)))
    o : Out(stream.Signature(sample_layout(width)))
    busy : Out(1)
    error : Out(1)
        ``shift`` exceeds the word width or symmetry is unknown (nothing is accepted).
    """

    def __init__(self, *, segments=8, fmt=Q8_8):
        if not isinstance(segments, int) or not 1 <= segments <= 32:
            raise ValueError(f"segments must be an integer from 1 to 32, not {segments!r}")
        if not isinstance(fmt, Format):
            raise TypeError(f"fmt must be a Format, not {fmt!r}")
        self._segments = segments
        self._fmt = fmt
        self._pipeline = MAPPER_LATENCY - 1     # into the output buffer
        sample = stream.Signature(sample_layout(fmt.width))
        super().__init__({
            "config": In(mapper_config_layout(fmt.width, segments)),
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
        m.submodules.out = out = CreditBuffer(sample_layout(W), self._pipeline)
        wiring.connect(m, out.o, wiring.flipped(self.o))

        cfg_ok = Signal()
        m.d.comb += [
            cfg_ok.eq((cfg.shift <= W) & (cfg.symmetry.as_value() != 3)),
            self.error.eq(~cfg_ok),
            self.i.ready.eq(cfg_ok & out.credit),
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
        # Stage 0: the input word.  Stage 1: |x| if symmetric; compare with bounds.
        x = Signal(signed(W), reset_less=True)
        m.d.sync += x.eq(self.i.payload.data)
        xs = Signal(signed(W), reset_less=True)
        above = Signal(N, reset_less=True)
        magnitude = hdl_saturate(Mux(x < 0, -x, x), W)
        xs_next = Mux(cfg.symmetry == Symmetry.NONE, x, magnitude)
        m.d.sync += xs.eq(xs_next)
        for n in range(N):
            m.d.sync += above[n].eq(xs_next >= cfg.segments[n].bound[:W].as_signed())

        # Stage 2: the highest segment whose bound is <= x.
        slope = Signal(signed(W), reset_less=True)
        offset = Signal(signed(W), reset_less=True)
        xs2 = Signal(signed(W), reset_less=True)
        m.d.sync += xs2.eq(xs)
        m.d.sync += [slope.eq(cfg.segments[0].slope[:W].as_signed()),
                     offset.eq(cfg.segments[0].offset[:W].as_signed())]
        for n in range(1, N):
            with m.If(above[n]):
                m.d.sync += [slope.eq(cfg.segments[n].slope[:W].as_signed()),
                             offset.eq(cfg.segments[n].offset[:W].as_signed())]

        # Stage 3: exact a*x + (b << shift) plus the rounding increment (half an
        # output step, in the aligned offset's zero low bits, so one adder does
        # both).  Stage 4: shift and saturate.  Stage 5: odd symmetry.
        acc = Signal(signed(2 * W + 1), reset_less=True)
        offset_aligned = (offset << cfg.shift)[:2 * W].as_signed()
        m.d.sync += acc.eq(slope * xs2 + (offset_aligned | hdl_half(cfg.shift, W)))
        y = Signal(signed(W), reset_less=True)
        m.d.sync += y.eq(hdl_saturate(acc >> cfg.shift, W))
        result = Signal(signed(W), reset_less=True)
        m.d.sync += result.eq(Mux(meta[4].negate, hdl_saturate(-y, W), y))

        last = meta[self._pipeline - 1]
        m.d.comb += [
            out.i.valid.eq(last.valid),
            out.i.payload.data.eq(result),
            out.i.payload.eol.eq(last.eol),
            out.i.payload.eof.eq(last.eof),
            self.busy.eq(Cat(stage.valid for stage in meta).any() | out.o.valid),
        ]
        return m
