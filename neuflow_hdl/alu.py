"""The StreamALU: NeuFlow's term-by-term streaming operators."""

from amaranth.hdl import Cat, EnableInserter, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .dsp import registered_product
from .numerics import NARROW_STAGES, Q8_8, Format, hdl_narrow_stages, hdl_saturate
from .regs import ALU_CONFIG, AluOp, sample_layout
from .stream import CREDIT_BUFFER_LATENCY, CreditBuffer, activation, delay_line, replicas

__all__ = ["StreamALU", "alu_latency"]


def alu_latency(op, width):
    """Cycles from the operands' handshake to ``o.valid`` for ``op`` on
    ``width``-bit words: operands, exact result, rounding increment, shift and
    saturation (5 stages), or for DIV operands, magnitudes, the dividend's
    terms, dividend and divisor, a stage per quotient bit and the sign; then
    the output buffer (its word leaves from a register)."""
    return (4 + width + 1 if op == AluOp.DIV else 2 + NARROW_STAGES) + CREDIT_BUFFER_LATENCY


class StreamALU(wiring.Component):
    """Term-by-term ADD, SUB, MUL, DIV, MAX, MIN, SQUARE, ABS of two streams.

    Operand ``a`` comes from stream ``a``; operand ``b`` from stream ``b``, or
    from ``config.const`` when ``config.b_const`` is set.  SQUARE and ABS never
    consume ``b``.  Results follow :mod:`neuflow_hdl.numerics`: the exact
    result is narrowed by ``config.shift`` (round half up, saturate), except
    DIV, which computes ``a * 2**shift / b`` rounded half up and saturated,
    with division by zero saturating toward the sign of ``a``.

    The join waits for both operands.  Output words carry the ``eol``/``eof``
    flags of ``a``; a ``b`` word whose flags differ sets ``error`` (sticky
    until the cycle after ``start``).  One result per cycle for every
    operation.

    Latency (operand handshake to ``o.valid``): :attr:`latency` for DIV,
    :attr:`fast_latency` for every other operation.  Change ``config`` only
    while ``busy`` is low, and a cycle before the next operands (its check
    is a register).

    Members
    -------
    config : In(ALU_CONFIG)
    start : In(1)
        The configuration changes at the end of this cycle; on the next the
        ALU clears ``error`` and takes no operand (from a register of its
        own: the strobe reaches no handshake).
    a, b : In(stream.Signature(sample_layout(width)))
    o : Out(stream.Signature(sample_layout(width)))
    busy, error : Out(1)
        ``error`` is also high while ``config.shift`` exceeds the word width
        (then nothing is accepted).
    """

    def __init__(self, *, fmt=Q8_8):
        if not isinstance(fmt, Format):
            raise TypeError(f"fmt must be a Format, not {fmt!r}")
        self._fmt = fmt
        W = fmt.width
        self._fast_pipeline = alu_latency(AluOp.ADD, W) - CREDIT_BUFFER_LATENCY
        self._div_pipeline = alu_latency(AluOp.DIV, W) - CREDIT_BUFFER_LATENCY
        sample = stream.Signature(sample_layout(W))
        super().__init__({
            "config": In(ALU_CONFIG),
            "start": In(1),
            "a": In(sample),
            "b": In(sample),
            "o": Out(sample),
            "busy": Out(1),
            "error": Out(1),
        })

    fmt = property(lambda self: self._fmt)

    @property
    def latency(self):
        """DIV latency in cycles (the longest)."""
        return alu_latency(AluOp.DIV, self._fmt.width)

    @property
    def fast_latency(self):
        """Latency of every operation but DIV."""
        return alu_latency(AluOp.ADD, self._fmt.width)

    def elaborate(self, platform):
        m = Module()
        W = self._fmt.width
        cfg = self.config
        m.submodules.out = out = CreditBuffer(sample_layout(W), self._div_pipeline)
        wiring.connect(m, out.o, wiring.flipped(self.o))
        fire = self._join(m, out.credit)

        # -- Stage 0: operands ----------------------------------------------------
        # Data registers have no reset, only the valid bits beside them (`meta`),
        # which keeps the tile's flush net small.
        # `div` records which tap emits the word, so a word that left by the
        # fast tap is never emitted again by the DIV tap after an op change.
        meta_layout = data.StructLayout({"valid": 1, "div": 1, "eol": 1, "eof": 1})
        meta = delay_line(m, meta_layout, self._div_pipeline)
        m.d.sync += [
            meta[0].valid.eq(fire),
            meta[0].div.eq(cfg.op == AluOp.DIV),     # as ``in_flight`` below assumes
            meta[0].eol.eq(self.a.payload.eol),
            meta[0].eof.eq(self.a.payload.eof),
        ]
        # The operands twice, replicas for the fast path and for the divider
        # (one pair of registers into both pulled them apart: a critical path).
        # SQUARE's second factor is a (it takes no b).
        b_in = Mux(cfg.op == AluOp.SQUARE, self.a.payload.data,
                   Mux(cfg.b_const, cfg.const[:W].as_signed(), self.b.payload.data))
        with m.If(fire):
            a, a_div = replicas(m, self.a.payload.data, 2, "a", signed(W), reset_less=True)
            b, b_div = replicas(m, b_in, 2, "b", signed(W), reset_less=True)
        # MUL and SQUARE: the factors enter a multiplier's own input registers
        # with a and b, and its product register is the exact result's stage
        # (a MULT18X18D with its registers on an ECP5: no fabric path through
        # the multiplier).
        product = registered_product(m, platform, self.a.payload.data, b_in, fire, meta[0].valid,
                                     "multiplier")
        # Each path's data registers move only while one of its words is in
        # flight (a clock enable), so an idle ALU does no work in simulation.
        fast_path, divider = Module(), Module()
        # The stages after the operands read the configuration from a copy of
        # their own: the configuration registers are the tile's, across it, and
        # the copy is steady from two cycles after a start, before any word
        # can reach those stages (words enter from then on; see activation).
        staged = Signal.like(cfg, reset_less=True, name="staged_config")
        m.d.sync += staged.eq(cfg)
        fast = self._fast_path(fast_path, staged, a, b, product)
        div = self._divider(divider, staged, a_div, b_div)
        # Each enable is a flip-flop: whether a word of the path is in one of
        # its stages, computed a cycle ahead from the word entering and the
        # stages but the last (an OR over the divider's stages fanning out to
        # its registers was a critical path).
        def in_flight(name, entering, flags):
            flag = Signal(name=name)
            m.d.sync += flag.eq(entering | Cat(flags[:-1]).any())
            return flag
        is_div_op = cfg.op == AluOp.DIV
        m.submodules.fast_path = EnableInserter(in_flight(
            "fast_in_flight", fire & ~is_div_op,
            [stage.valid & ~stage.div for stage in meta[:self._fast_pipeline]]))(fast_path)
        m.submodules.divider = EnableInserter(in_flight(
            "div_in_flight", fire & is_div_op, [stage.valid & stage.div for stage in meta]))(divider)

        fast_meta = meta[self._fast_pipeline - 1]
        div_meta = meta[self._div_pipeline - 1]
        is_div = div_meta.valid & div_meta.div
        m.d.comb += [
            out.i.valid.eq(is_div | (fast_meta.valid & ~fast_meta.div)),
            out.i.payload.data.eq(Mux(is_div, div, fast)),
            out.i.payload.eol.eq(Mux(is_div, div_meta.eol, fast_meta.eol)),
            out.i.payload.eof.eq(Mux(is_div, div_meta.eof, fast_meta.eof)),
            self.busy.eq(Cat(stage.valid for stage in meta).any() | out.held),
        ]
        return m

    def _join(self, m, credit):
        """The operands' join: ``a`` and (unless constant or unused) ``b`` move
        together when the output buffer grants a credit; their flags must agree.
        Returns the handshake of ``a``."""
        W, cfg = self._fmt.width, self.config
        unary = Signal()
        need_b = Signal()
        flag_error = Signal()
        # The configuration check off the handshake's path (see activation).
        rewind, cfg_ok, taking = activation(m, self.start, cfg.shift <= W)
        m.d.comb += [
            unary.eq((cfg.op == AluOp.SQUARE) | (cfg.op == AluOp.ABS)),
            need_b.eq(~cfg.b_const & ~unary),
            self.error.eq(~cfg_ok | flag_error),
        ]
        go = Signal()
        m.d.comb += [
            go.eq(taking & credit),
            self.a.ready.eq(go & (~need_b | self.b.valid)),
            self.b.ready.eq(go & need_b & self.a.valid),
        ]
        fire = Signal()
        m.d.comb += fire.eq(self.a.valid & self.a.ready)
        with m.If(rewind):
            m.d.sync += flag_error.eq(0)
        with m.Elif(fire & need_b & ((self.a.payload.eol != self.b.payload.eol) |
                                     (self.a.payload.eof != self.b.payload.eof))):
            m.d.sync += flag_error.eq(1)
        return fire

    def _fast_path(self, m, cfg, a, b, product):
        """Every operation but DIV on configuration ``cfg``: the exact result
        (``product``, the multiplier's register, for MUL and SQUARE), then the
        one narrowing (the rounding increment, the shift and saturation, a
        stage each)."""
        W = self._fmt.width
        exact = Signal(signed(2 * W + 1), reset_less=True)
        multiplies = Signal()
        m.d.comb += multiplies.eq((cfg.op == AluOp.MUL) | (cfg.op == AluOp.SQUARE))
        with m.Switch(cfg.op):
            with m.Case(AluOp.ADD):
                m.d.sync += exact.eq(a + b)
            with m.Case(AluOp.SUB):
                m.d.sync += exact.eq(a - b)
            with m.Case(AluOp.MAX):
                m.d.sync += exact.eq(Mux(a > b, a, b))
            with m.Case(AluOp.MIN):
                m.d.sync += exact.eq(Mux(a < b, a, b))
            with m.Case(AluOp.ABS):
                m.d.sync += exact.eq(Mux(a < 0, -a, a))
        return hdl_narrow_stages(m, Mux(multiplies, product, exact), cfg.shift, W, W, "fast")

    def _divider(self, m, cfg, a, b):
        """DIV: restoring division on magnitudes, one quotient bit per stage.
        q = floor((2*(|a| << s) + |b| - neg) / (2*|b|)) is |a * 2**s / b| rounded
        half up for the signed result (neg: the signs differ); q >= 2**W saturates."""
        W = self._fmt.width
        # The operands' magnitudes and signs, the dividend's terms, then dividend
        # and divisor: a stage each.  The signs travel beside them (``side``).
        side_layout = data.StructLayout({"neg": 1, "by_zero": 1, "a_sign": 2})   # a_sign 1: a > 0, 2: a < 0
        magnitude_a = Signal(unsigned(W), reset_less=True)
        magnitude_b = Signal(unsigned(W), reset_less=True)
        first_side = Signal(side_layout, reset_less=True)
        m.d.sync += [
            magnitude_a.eq(Mux(a < 0, -a, a)[:W]),
            magnitude_b.eq(Mux(b < 0, -b, b)[:W]),
            first_side.neg.eq((a < 0) ^ (b < 0)),
            first_side.by_zero.eq(b == 0),
            first_side.a_sign.eq(Cat(a > 0, a < 0)),
        ]
        # The dividend's terms, then their sum: the variable shift and the
        # adder in stages of their own.
        shifted_a = Signal(unsigned(2 * W), reset_less=True)
        rounding = Signal(signed(W + 1), reset_less=True)      # -1 only when dividing by 0
        term_divisor = Signal(unsigned(W + 1), reset_less=True)
        term_side = Signal(side_layout, reset_less=True)
        m.d.sync += [
            shifted_a.eq(magnitude_a << cfg.shift),
            rounding.eq(magnitude_b - first_side.neg),
            term_divisor.eq(magnitude_b * 2),
            term_side.eq(first_side),
        ]
        dividend = Signal(unsigned(2 * W + 1), reset_less=True)
        divisor = Signal(unsigned(W + 1), reset_less=True)
        side = Signal(side_layout, reset_less=True)
        m.d.sync += [dividend.eq(shifted_a * 2 + rounding), divisor.eq(term_divisor), side.eq(term_side)]
        rem = dividend
        dvs = divisor
        quotient = Signal(unsigned(0))
        overflow = Signal()
        m.d.comb += overflow.eq(dividend >= (divisor << W))
        # Without overflow the remainder before quotient bit `bit` is below
        # divisor << (bit + 1), so only its W + 2 bits from `bit` up take part in
        # the compare and subtract, and it shrinks by a bit per stage.  (With
        # overflow the quotient is ignored.)
        for bit in reversed(range(W)):
            next_rem = Signal(unsigned(bit + W + 1), name=f"div_rem_{bit}", reset_less=True)
            next_dvs = Signal(unsigned(W + 1), name=f"div_divisor_{bit}", reset_less=True)
            next_q = Signal(unsigned(W - bit), name=f"div_quotient_{bit}", reset_less=True)
            next_side = Signal(side_layout, name=f"div_side_{bit}", reset_less=True)
            next_ovf = Signal(name=f"div_overflow_{bit}", reset_less=True)
            high = rem[bit:bit + W + 2]
            subtract = high >= dvs
            m.d.sync += [
                next_rem.eq(Cat(rem[:bit], Mux(subtract, high - dvs, high)[:W + 1])),
                next_dvs.eq(dvs),
                next_q.eq(Cat(subtract, quotient)),
                next_side.eq(side),
                next_ovf.eq(overflow),
            ]
            rem, dvs, quotient, side, overflow = next_rem, next_dvs, next_q, next_side, next_ovf
        magnitude = Mux(overflow, (1 << W) - 1, quotient)
        signed_q = Mux(side.neg, -magnitude, magnitude)
        div = Signal(signed(W), reset_less=True)
        m.d.sync += div.eq(Mux(side.by_zero,
                               Mux(side.a_sign[0], self._fmt.max, Mux(side.a_sign[1], self._fmt.min, 0)),
                               hdl_saturate(signed_q, W)))
        return div
