"""The 2-D convolver: NeuFlow's K x K parallel multiply-accumulate array."""

from amaranth.hdl import Cat, EnableInserter, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .dsp import MULTIPLIER_LATENCY, registered_product
from .numerics import Q8_8, Format, accumulator_width, hdl_half, hdl_saturate
from .regs import CONV_CONFIG, ConvMode, GEOMETRY_BITS, MAX_KERNEL, sample_layout
from .stream import CREDIT_BUFFER_LATENCY, CreditBuffer, activation, delay_line, replica, replicas

__all__ = ["Convolver", "KernelBank", "PartialSumJoin", "JOIN_STAGES", "JOIN_LATENCY", "convolver_latency"]


def _tree_levels(kernel):
    """Registered levels of the sum and max trees over the ``kernel`` row chains."""
    return (kernel - 1).bit_length()


#: Registered stages of :class:`PartialSumJoin` before its output buffer.
JOIN_STAGES = 3
#: :class:`PartialSumJoin`'s cycles from a sum taken to its word at the output:
#: its stages, then its output buffer (the word leaves from a register).
JOIN_LATENCY = JOIN_STAGES + CREDIT_BUFFER_LATENCY


def convolver_latency(kernel):
    """:attr:`Convolver.latency` of a ``kernel`` x ``kernel`` convolver: fire,
    line buffers, row words, the multipliers' registers, row chains, the tree
    levels and the bias into the output buffer of sums, then the buffer and
    the join."""
    return 4 + MULTIPLIER_LATENCY + _tree_levels(kernel) + CREDIT_BUFFER_LATENCY + JOIN_LATENCY


def _sums_layout(acc_width):
    """The output buffer's words: an unrounded sum and its frame flags."""
    return data.StructLayout({"acc": signed(acc_width), "eol": 1, "eof": 1})


def _k_ok(cfg, kernel):
    """The configured ``k`` is a kernel size this convolver has (1 .. K)."""
    return (cfg.k >= 1) & (cfg.k <= kernel)


class KernelBank(wiring.Component):
    """The convolver's K x K weights, and the preload bank behind them.

    With ``config.preload`` clear, the ``weights`` stream's words go straight
    into the kernel in use: ``k*k`` words row-major into the bottom-right
    ``k x k`` corner.  With ``preload`` set, of the words after ``start`` the
    first ``weight_skip`` are skipped, the next ``p*p`` (``p`` =
    ``preload_k``, 0 meaning K: a p x p kernel, row-major) fill the bank, the
    rest are ignored; the next ``start`` makes the bank the kernel in use
    (its words are written into the weights two cycles after, with the
    zeroing below; no word entering then reaches a multiplier before).
    The bank is K rows of K words: a word enters the bottom row at its right
    end, the row moving left, and after every ``p`` words the rows move up
    first, so the kernel ends in the bottom-right ``p x p`` corner.  A word
    lands in the bank, or in the kernel in use, a cycle after it is taken.
    On the cycle after ``start`` (the bank's own register of it) the pointer
    rewinds, and on the next cycle the weights outside the corner (when
    ``k`` is valid) become zero: the corner's rows and columns are
    registered flags of ``k`` (``inside``), so no comparison with the
    configuration drives the K*K weight registers' enables.
    Weights and bank are data without reset: a flush (the tile's operator
    reset) keeps the kernels.

    Members
    -------
    config : In(CONV_CONFIG)
        ``k``, ``preload``, ``weight_skip``.
    start : In(1)
        The tile's start strobe.
    weights : In(stream.Signature(sample_layout(width)))
        Always ready.
    kernel : Out(signed(width)).array(K, K)
        The kernel in use, row-major.
    inside : Out(K)
        Bit ``i``: row and column ``i`` are in the bottom-right ``k x k``
        corner (``i >= K - k``).  A register of the configuration: it holds
        the new ``k`` from the cycle after ``start``.
    """

    def __init__(self, *, kernel, width):
        self._kernel, self._width = kernel, width
        super().__init__({
            "config": In(CONV_CONFIG),
            "start": In(1),
            "weights": In(stream.Signature(sample_layout(width))),
            "kernel": Out(signed(width)).array(kernel, kernel),
            "inside": Out(kernel),
        })

    def in_corner(self, r, c):
        """Weight ``(r, c)`` belongs to the ``k x k`` kernel in use (an AND of
        two flip-flops)."""
        return self.inside[r] & self.inside[c]

    def elaborate(self, platform):
        m = Module()
        K, W, cfg = self._kernel, self._width, self.config
        weight = [[Signal(signed(W), name=f"weight_{r}_{c}", reset_less=True) for c in range(K)]
                  for r in range(K)]
        bank = [Signal(signed(W), name=f"preload_{n}", reset_less=True) for n in range(K * K)]
        w_row = Signal(range(K))
        w_col = Signal(range(K))
        skip_left = Signal.like(cfg.weight_skip)
        # The preloaded kernel's rows taken, and the words of the row being
        # taken (counted so, a p x p kernel's end needs no multiplier for p * p).
        rows_kept = Signal(range(K + 1))
        in_row = Signal(range(K))
        pending = Signal()
        size = Signal(range(K + 1))         # the preloaded kernel's size
        m.d.comb += size.eq(Mux((cfg.preload_k == 0) | (cfg.preload_k > K), K, cfg.preload_k))
        # The counters' decisions, kept as flags a word ahead, so that the
        # enables of the K*K preload registers are an AND of flip-flops, not a
        # comparison with the configuration: skip_left != 0, rows_kept != size,
        # and (in_row == 0) & (rows_kept != 0), the rows moving up first.
        skipping = Signal()
        filling = Signal()
        moving = Signal()
        corner = Signal(range(K + 1))       # K - k: the corner's first row and column
        k_ok = Signal()
        settle = Signal()                   # the cycle after start: inside and k_ok hold the new k
        load = Signal()                     # the same cycle, when the bank holds a preloaded kernel
        m.d.comb += [corner.eq(K - cfg.k), self.weights.ready.eq(1)]
        m.d.comb += [self.kernel[r][c].eq(weight[r][c]) for r in range(K) for c in range(K)]
        m.d.sync += [self.inside[i].eq(i >= corner) for i in range(K)]
        # The tile's start, answered on the next cycle from a register of the
        # bank's own (the convolver's rewind, kept apart from it).
        start = replica(reset_less=True, name="bank_start")
        m.d.sync += start.eq(self.start)
        m.d.sync += [k_ok.eq(_k_ok(cfg, K)), settle.eq(start), load.eq(start & pending)]
        # A word taken into the bank lands there a cycle later, from registers
        # beside it: the word, and per row the enable of its shift, decided
        # here (the weight sink's ``valid`` reaches no bank register).  The
        # bank is read only a cycle after ``start`` (``load``), by when a
        # word taken on the cycle before ``start`` has landed.
        word = Signal(signed(W), reset_less=True)
        fill = replica(name="bank_fill")                 # the bottom row takes ``word``
        move_up = [replica(name=f"bank_up_{r}") for r in range(K - 1)]     # row r takes row r + 1
        m.d.sync += [word.eq(self.weights.payload.data), fill.eq(0)] + [up.eq(0) for up in move_up]
        with m.If(start):
            m.d.sync += [w_row.eq(corner), w_col.eq(corner), skip_left.eq(cfg.weight_skip),
                         rows_kept.eq(0), in_row.eq(0), pending.eq(0),
                         skipping.eq(cfg.weight_skip != 0), filling.eq(1), moving.eq(0)]
        with m.Elif(self.weights.valid & cfg.preload):
            with m.If(skipping):
                m.d.sync += [skip_left.eq(skip_left - 1), skipping.eq(skip_left != 1)]
            with m.Elif(filling):
                row_ends = in_row == size - 1
                m.d.sync += moving.eq(row_ends)
                with m.If(row_ends):
                    m.d.sync += [in_row.eq(0), rows_kept.eq(rows_kept + 1), filling.eq(rows_kept + 1 != size)]
                with m.Else():
                    m.d.sync += in_row.eq(in_row + 1)
                # after a row's last word (``moving``) the rows move up first
                m.d.sync += [fill.eq(1), pending.eq(1)] + [up.eq(moving) for up in move_up]
        with m.Elif(self.weights.valid):
            with m.If(w_col >= K - 1):
                m.d.sync += w_col.eq(corner)
                m.d.sync += w_row.eq(Mux(w_row >= K - 1, corner, w_row + 1))
            with m.Else():
                m.d.sync += w_col.eq(w_col + 1)
        # Each weight register's own chain, all decided on the cycle after
        # start (``settle``): zeroed outside the k x k corner, so the products
        # need no mask (MAX masks its words instead); a word written straight
        # in (always inside the corner); the preloaded bank, as it was at
        # start (a word shifted into it then lands at the cycle's end).  Its
        # enable is a flip-flop, ``load``: ``start`` itself reaches only
        # registers, not the 49 x 16 weights across the DSP row.  One chain
        # per register, as a reset, an enable and a two-way choice (yosys made
        # wide multiplexers of the same choice spread over the control's chain).
        # A word written straight in lands a cycle after it is taken, like a
        # preloaded one: per row a replica saying the word goes to that row,
        # and its column, registered beside the weights.
        direct_row = [replica(name=f"direct_row_{r}") for r in range(K)]
        direct_col = Signal.like(w_col)
        m.d.sync += [flag.eq(self.weights.valid & ~cfg.preload & ~start & (w_row == r))
                     for r, flag in enumerate(direct_row)]
        m.d.sync += direct_col.eq(w_col)
        bottom = K * (K - 1)
        for r, up in enumerate(move_up):
            with m.If(up):
                m.d.sync += [bank[r * K + c].eq(bank[(r + 1) * K + c]) for c in range(K)]
        with m.If(fill):
            m.d.sync += [bank[n].eq(bank[n + 1]) for n in range(bottom, K * K - 1)] + [bank[-1].eq(word)]
        for r in range(K):
            for c in range(K):
                with m.If(settle & k_ok & ~self.in_corner(r, c)):
                    m.d.sync += weight[r][c].eq(0)
                with m.Elif(direct_row[r] & (direct_col == c)):
                    m.d.sync += weight[r][c].eq(word)
                with m.Elif(load):
                    m.d.sync += weight[r][c].eq(bank[r * K + c])
        return m


class PartialSumJoin(wiring.Component):
    """The convolver's output stage: unrounded sums from its output buffer, plus
    (with ``use_psum``) a partial-sum word aligned by ``shift``, then rounded,
    shifted and saturated to a word.

    :data:`JOIN_STAGES` registered stages: the taken sum, and the aligned
    partial sum with the rounding increment (half an output step, which falls
    in the aligned partial sum's zero low bits, so one adder does both); their
    sum; the shift; the saturation, written into a :class:`CreditBuffer` whose
    word leaves from a register (:data:`JOIN_LATENCY` in all).  The stages never
    stall: a sum is taken (with its partial sum) only on the buffer's
    credit.  A sum waits for its partial sum; neither waits for the other's
    stream to have been offered first.

    Members
    -------
    sums : In(stream.Signature(StructLayout({"acc": signed(acc_width), "eol", "eof"})))
    psum : In(stream.Signature(sample_layout(width)))
    use_psum : In(1)
    shift : In(CONV_CONFIG shift field)
        Output shift (0 for window maxima).  Both are taken through a
        register: they must be steady from the cycle before a sum arrives.
    o : Out(stream.Signature(sample_layout(width)))
    busy : Out(1)
        A word is in one of the stages.
    """

    def __init__(self, *, width, acc_width):
        self._width, self._acc_width = width, acc_width
        super().__init__({
            "sums": In(stream.Signature(_sums_layout(acc_width))),
            "psum": In(stream.Signature(sample_layout(width))),
            "use_psum": In(1),
            "shift": In(CONV_CONFIG.members["shift"]),
            "o": Out(stream.Signature(sample_layout(width))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W, acc_width = self._width, self._acc_width
        sums, psum = self.sums, self.psum
        # The mode and shift come from the configuration, steady from a start
        # until the next; registered here, beside the adder, they reach it
        # from flip-flops of its own (a sum arrives cycles after a start).
        # The shift twice, a replica for each of its two shifters (one
        # register's net into both was a critical path).
        use_psum = Signal(reset_less=True)
        align, shift = replicas(m, self.shift, 2, "shift", len(self.shift), reset_less=True)
        half = Signal(W, reset_less=True)
        m.d.sync += [use_psum.eq(self.use_psum), half.eq(hdl_half(self.shift, W))]
        psum_aligned = (psum.payload.data << align)[:acc_width].as_signed()
        flags = data.StructLayout({"eol": 1, "eof": 1})
        # A taken sum and its aligned partial sum (with the rounding
        # increment) go into registers before the adder: the sum leaves the
        # sums buffer from its read register, which on an FPGA is the block
        # RAM's own (several ns from the clock), the partial sum from a FIFO
        # through the shift.
        t_acc = Signal(signed(acc_width), reset_less=True)
        t_addend = Signal(signed(acc_width), reset_less=True)
        joined = Signal(signed(acc_width + 1), reset_less=True)
        shifted = Signal(signed(acc_width + 1), reset_less=True)
        t_flags = Signal(flags, reset_less=True)
        j_flags = Signal(flags, reset_less=True)
        s_flags = Signal(flags, reset_less=True)
        t_valid = Signal()
        j_valid = Signal()
        s_valid = Signal()
        take = Signal()
        # The stages never stall: a sum is taken only on the output buffer's
        # credit, so the consumer's ready reaches only the buffer's read
        # enable, never the partial-sum FIFO's nor the sums' (the join's
        # output is a router source, whose ready is a fork's AND of credits).
        m.submodules.out = out = CreditBuffer(sample_layout(W), JOIN_STAGES)
        wiring.connect(m, out.o, wiring.flipped(self.o))
        m.d.comb += [
            take.eq(sums.valid & out.credit & (~use_psum | psum.valid)),
            sums.ready.eq(take),
            psum.ready.eq(take & use_psum),
            self.busy.eq(t_valid | j_valid | s_valid | out.held),
        ]
        m.d.sync += [
            t_valid.eq(take),
            t_acc.eq(sums.payload.acc),
            t_addend.eq(Mux(use_psum, psum_aligned, 0) | half),
            t_flags.eol.eq(sums.payload.eol),
            t_flags.eof.eq(sums.payload.eof),
            j_valid.eq(t_valid), joined.eq(t_acc + t_addend), j_flags.eq(t_flags),
            s_valid.eq(j_valid), shifted.eq(joined >> shift), s_flags.eq(j_flags),
        ]
        # The saturation is written into the buffer (its storage is the last stage).
        m.d.comb += [
            out.i.valid.eq(s_valid),
            out.i.payload.data.eq(hdl_saturate(shifted, W)),
            out.i.payload.eol.eq(s_flags.eol),
            out.i.payload.eof.eq(s_flags.eof),
        ]
        return m


class Convolver(wiring.Component):
    """K x K convolver with line buffers, for images up to ``max_width`` words wide.

    Consumes a row-major image, one word per cycle with no back-pressure of its
    own, and produces one word for every valid window (``k x k``, ``k <= K``,
    bottom-right corner at a multiple of ``stride``): ``MAC`` computes
    ``narrow(sum(w * window) + bias, shift)``, ``MAC_PSUM`` adds a word of the
    ``psum`` stream aligned by ``shift`` before the single rounding, ``MAX``
    takes the window maximum (pooling).  Outputs carry ``eol``/``eof`` for the
    output geometry ``((W-k)//stride + 1) x ((H-k)//stride + 1)``.

    Weights arrive on the ``weights`` stream, which is always ready.  With
    ``preload`` clear they go straight into the kernel in use: ``k*k`` words
    row-major.  With ``preload`` set they fill a second bank for the *next*
    pass while this one streams: of the words after ``start``, the first
    ``weight_skip`` are skipped (a broadcast weight frame carries the kernels
    of several tiles one after another), the next ``K*K`` (a kernel padded to
    K x K, row-major) are kept, the rest are ignored; the next ``start`` makes
    that bank the kernel in use.  ``start`` is the tile's activation strobe,
    on the cycle its configuration registers take a new configuration; on the
    next cycle (the rewind, from a register of the convolver's own, so the
    strobe's long net ends in flip-flops) the convolver rewinds the weight
    pointer and the frame position, clears ``error`` and takes no word; on the
    one after (before a word taken then reaches a multiplier) the weights
    outside the bottom-right ``k x k`` corner become zero (when ``k`` is
    valid).  Frames may follow each other without ``start``.

    The pipeline never stalls: a word that completes a window enters only
    when the output buffer grants a credit, so output back-pressure reaches
    ``i.ready`` without stalling any pipeline register.  Words that complete
    no window are always accepted.  The buffer holds unrounded sums; the
    partial sum joins them after it, so a window fires without waiting for
    its ``psum`` word: in a chain of convolvers each link lags the previous
    one by the join and the link's FIFOs (a few cycles), not by a whole
    pipeline, as long as the lag stays within ``psum_slack`` words.

    Parameters
    ----------
    kernel : int
        K, the largest kernel size (1 .. 15).  K*K multipliers.
    max_width : int
        Longest image row the ``K-1`` line buffers (memory blocks) hold.
    fmt : Format
        Word format.
    psum_slack : int
        Extra words of the output buffer: how many windows may fire before
        their partial sums arrive without slowing the stream.

    Members
    -------
    config : In(CONV_CONFIG)
        Held stable while a frame streams.
    start : In(1)
        The configuration changes at the end of this cycle; the convolver
        rewinds on the next.
    weights, i, psum : In(stream.Signature(sample_layout(width)))
    o : Out(stream.Signature(sample_layout(width)))
    busy : Out(1)
        A frame is partly consumed or results are in flight.
    error : Out(1)
        The configuration is invalid (``k`` not in 1..K, ``stride`` 0, width
        not in k..max_width, height < k, shift > width, unknown mode: then no
        input is accepted), or an input word's ``eol``/``eof`` disagreed with
        the configured geometry (sticky until ``start``).

    Latency: :attr:`latency` cycles from the handshake of a window's last
    input word to ``o.valid`` (its partial sum, if any, waiting); a W x H
    frame with no back-pressure takes ``W*H + latency`` cycles from first
    input to last output.
    """

    def __init__(self, *, kernel=3, max_width=64, fmt=Q8_8, psum_slack=64):
        if not isinstance(kernel, int) or not 1 <= kernel <= MAX_KERNEL:
            raise ValueError(f"kernel must be an integer from 1 to {MAX_KERNEL}, not {kernel!r}")
        if not isinstance(max_width, int) or not kernel <= max_width < (1 << GEOMETRY_BITS):
            raise ValueError(f"max_width must be an integer from the kernel size ({kernel}) "
                             f"to {(1 << GEOMETRY_BITS) - 1}, not {max_width!r}")
        if not isinstance(fmt, Format):
            raise TypeError(f"fmt must be a Format, not {fmt!r}")
        if not isinstance(psum_slack, int) or psum_slack < 0:
            raise ValueError(f"psum_slack must be a non-negative integer, not {psum_slack!r}")
        self._kernel = kernel
        self._max_width = max_width
        self._fmt = fmt
        self._psum_slack = psum_slack
        self._tree_levels = _tree_levels(kernel)
        self._pipeline = convolver_latency(kernel) - CREDIT_BUFFER_LATENCY - JOIN_LATENCY     # into the output buffer
        sample = stream.Signature(sample_layout(fmt.width))
        super().__init__({
            "config": In(CONV_CONFIG),
            "start": In(1),
            "weights": In(sample),
            "i": In(sample),
            "psum": In(sample),
            "o": Out(sample),
            "busy": Out(1),
            "error": Out(1),
        })

    kernel = property(lambda self: self._kernel)
    max_width = property(lambda self: self._max_width)
    fmt = property(lambda self: self._fmt)

    @property
    def latency(self):
        """Cycles from the handshake of a window's last input word to its output."""
        return convolver_latency(self._kernel)

    def elaborate(self, platform):
        m = Module()
        K, W = self._kernel, self._fmt.width
        acc_shape = signed(accumulator_width(W, K))
        cfg = self.config
        m.submodules.out = out = CreditBuffer(_sums_layout(acc_shape.width), self._pipeline,
                                              self._psum_slack, copies=2)
        m.submodules.bank = bank = KernelBank(kernel=K, width=W)
        m.submodules.join = join = PartialSumJoin(width=W, acc_width=acc_shape.width)
        # The convolver rewinds on the cycle after ``start``, from a register
        # of its own; the strobe reaches the input handshake only through
        # ``taking`` (see activation).
        is_max, use_psum, runnable = self._checks(m)
        rewind, cfg_ok, taking = activation(m, self.start, runnable, copies=2)
        m.d.comb += [bank.config.eq(cfg), bank.start.eq(self.start)]
        wiring.connect(m, wiring.flipped(self.weights), bank.weights)

        flag_error = Signal()
        m.d.comb += self.error.eq(~cfg_ok | flag_error)
        x, y, fire, emit, window_eol, window_eof = self._frame_position(m, rewind, taking, out.credit,
                                                                        flag_error)
        # Side band travelling beside the data: delayed by the pipeline depth.
        meta = delay_line(m, data.StructLayout({"valid": 1, "eol": 1, "eof": 1}), self._pipeline)
        m.d.sync += [
            meta[0].valid.eq(fire & emit),
            meta[0].eol.eq(window_eol),
            meta[0].eof.eq(window_eof),
        ]
        b_fire, row_word = self._row_words(m, rewind, x, fire)
        row_sums, row_maxes = self._row_chains(m, platform, bank, b_fire, row_word)
        # The trees and the bias move only while a window is in flight (a clock
        # enable), so an idle convolver does no work in simulation.
        trees = Module()
        m.submodules.trees = EnableInserter(Cat(stage.valid for stage in meta).any())(trees)
        row_width = row_sums[0].shape().width
        sum_root = self._tree(trees, row_sums, "sum",
                              lambda level: signed(min(row_width + level + 1, acc_shape.width)),
                              lambda a, b: a + b)
        max_root = self._tree(trees, row_maxes, "max", lambda level: signed(W),
                              lambda a, b: Mux(a > b, a, b))

        # -- Bias, into the output buffer; then the join with the partial sums.
        total = Signal(acc_shape, reset_less=True)
        trees.d.sync += total.eq(Mux(is_max, max_root, sum_root + cfg.bias))
        last = meta[self._pipeline - 1]
        m.d.comb += [
            out.i.valid.eq(last.valid),
            out.i.payload.acc.eq(total),
            out.i.payload.eol.eq(last.eol),
            out.i.payload.eof.eq(last.eof),
            join.use_psum.eq(use_psum),
            join.shift.eq(Mux(is_max, 0, cfg.shift)),
        ]
        wiring.connect(m, out.o, join.sums)
        wiring.connect(m, wiring.flipped(self.psum), join.psum)
        wiring.connect(m, join.o, wiring.flipped(self.o))
        in_flight = Signal()
        m.d.comb += in_flight.eq(Cat(stage.valid for stage in meta).any())
        m.d.comb += self.busy.eq((x != 0) | (y != 0) | in_flight | out.held | join.busy)
        return m

    def _checks(self, m):
        """(is_max, use_psum, runnable): the mode, and whether the
        configuration is one this convolver can run (combinational; the
        handshake takes it through a register, see activation)."""
        cfg, K, W = self.config, self._kernel, self._fmt.width
        is_max = Signal()
        use_psum = Signal()
        runnable = Signal()
        m.d.comb += [
            is_max.eq(cfg.mode == ConvMode.MAX),
            use_psum.eq(cfg.mode == ConvMode.MAC_PSUM),
            runnable.eq(_k_ok(cfg, K) & (cfg.stride >= 1) &
                        (cfg.width >= cfg.k) & (cfg.width <= self._max_width) &
                        (cfg.height >= cfg.k) & (cfg.shift <= W) &
                        (cfg.mode.as_value() != 3)),
        ]
        return is_max, use_psum, runnable

    def _frame_position(self, m, rewind, taking, credit, flag_error):
        """Stage A: the frame position, window validity and the input handshake.
        A word that completes a window enters only with an output-buffer credit;
        a word whose flags disagree with the geometry sets ``flag_error``.
        Returns (x, y, fire, emit, and whether the window at the position
        ends its row and its frame)."""
        cfg = self.config
        x = Signal(GEOMETRY_BITS)
        y = Signal(GEOMETRY_BITS)
        next_x = Signal(GEOMETRY_BITS + 4)   # column of the next output window (this row)
        next_y = Signal(GEOMETRY_BITS + 4)
        cur_nx = Signal.like(next_x)
        cur_ny = Signal.like(next_y)
        last_col = Signal()
        last_row = Signal()
        # The geometry's last positions, registers of the configuration (as
        # cfg_ok: a new one holds from the cycle after start).  A reset keeps
        # them: they hold the configuration's values on the first cycle after
        # a flush, when the window test below takes them.
        first_window = Signal(GEOMETRY_BITS, reset_less=True)
        last_x = Signal(GEOMETRY_BITS, reset_less=True)
        last_y = Signal(GEOMETRY_BITS, reset_less=True)
        k_is_1 = Signal(reset_less=True)
        stride_is_1 = Signal(reset_less=True)
        # A window is its row's last when x + stride >= width: x against
        # width - stride, signed (the same for y).
        last_window_x = Signal(signed(GEOMETRY_BITS + 1), reset_less=True)
        last_window_y = Signal(signed(GEOMETRY_BITS + 1), reset_less=True)
        m.d.sync += [first_window.eq(cfg.k - 1), last_x.eq(cfg.width - 1), last_y.eq(cfg.height - 1),
                     k_is_1.eq(cfg.k == 1), stride_is_1.eq(cfg.stride == 1),
                     last_window_x.eq(cfg.width - cfg.stride), last_window_y.eq(cfg.height - cfg.stride)]
        # Registers kept beside the position, so the window tests below start
        # from flip-flops, not from a compare or an adder on x: whether x and y
        # are 0, and x + 1 (a reset or a flush leaves x at 0, as their inits say).
        x_is_0 = Signal(init=1)
        y_is_0 = Signal(init=1)
        x_plus_1 = Signal(GEOMETRY_BITS + 1, init=1)
        m.d.comb += [
            cur_nx.eq(Mux(x_is_0, first_window, next_x)),
            cur_ny.eq(Mux(y_is_0, first_window, next_y)),
            last_col.eq(x == last_x),
            last_row.eq(y == last_y),
        ]
        # The handshake twice, each from replicas of its registers: ``ready``
        # for the input FIFO, and ``fire`` (the same handshake) beside the
        # position it moves.  Computed once, the FIFO's ready came back across
        # the tile as the position's clock enable (a critical path).
        fire = Signal()
        col_here, row_here, (emit_fifo, emit) = self._window_ahead(
            m, rewind, fire, x, x_plus_1, y, cur_nx, cur_ny, last_col, last_row, k_is_1, stride_is_1)
        m.d.comb += [
            self.i.ready.eq(taking[0] & (~emit_fifo | credit[0])),
            fire.eq(self.i.valid & taking[1] & (~emit | credit[1])),
        ]
        with m.If(rewind):
            m.d.sync += [x.eq(0), x_is_0.eq(1), x_plus_1.eq(1), y.eq(0), y_is_0.eq(1), flag_error.eq(0)]
        with m.Elif(fire):
            with m.If((self.i.payload.eol != last_col) | (self.i.payload.eof != (last_col & last_row))):
                m.d.sync += flag_error.eq(1)
            m.d.sync += next_x.eq(Mux(col_here, cur_nx + cfg.stride, cur_nx))
            with m.If(last_col):
                m.d.sync += [x.eq(0), x_is_0.eq(1), x_plus_1.eq(1)]
                m.d.sync += next_y.eq(Mux(row_here, cur_ny + cfg.stride, cur_ny))
                m.d.sync += [y.eq(Mux(last_row, 0, y + 1)), y_is_0.eq(last_row)]
            with m.Else():
                m.d.sync += [x.eq(x_plus_1), x_is_0.eq(0), x_plus_1.eq(x_plus_1 + 1)]
        window_eol = x >= last_window_x
        return x, y, fire, emit, window_eol, window_eol & (y >= last_window_y)

    def _window_ahead(self, m, rewind, fire, x, x_plus_1, y, cur_nx, cur_ny, last_col, last_row, k_is_1,
                      stride_is_1):
        """Whether the word at the frame position completes a window: an AND
        of two registers (the position's column and row are a window's), each
        computed a word ahead, from the position the word taken now (``fire``)
        leads to; so the input handshake sees two flip-flops, not the
        position's comparators.  With no word taken they take the position's
        own test, which also makes them right after a reset or a flush: that
        leaves the position at the origin and the geometry's registers as
        they were, and the configuration check, a register it clears, lets
        no word in on the first cycle.  Returns (the column's and the row's
        test at the position, combinational; the registered test twice, from
        two replicas of its registers)."""
        cfg = self.config
        col, row = Signal(name="emit_col_d"), Signal(name="emit_row_d")
        col_here, row_here = Signal(name="emit_col_here"), Signal(name="emit_row_here")
        col_next, row_next = Signal(name="emit_col_next"), Signal(name="emit_row_next")
        m.d.comb += [
            col_here.eq(x == cur_nx),
            row_here.eq(y == cur_ny),
            # The next column: the first window column after a row's end; after
            # a window column, the next if the stride is 1.
            col_next.eq(Mux(last_col, k_is_1, Mux(col_here, stride_is_1, x_plus_1 == cur_nx))),
            # The row changes only at a row's end (to the first window row after
            # the frame's last row).
            row_next.eq(Mux(last_col, Mux(last_row, k_is_1, Mux(row_here, stride_is_1, y + 1 == cur_ny)),
                            row_here)),
        ]
        with m.If(rewind):
            m.d.comb += [col.eq(cfg.k == 1), row.eq(cfg.k == 1)]
        with m.Elif(fire):
            m.d.comb += [col.eq(col_next), row.eq(row_next)]
        with m.Else():
            m.d.comb += [col.eq(col_here), row.eq(row_here)]
        cols, rows = replicas(m, col, 2, "emit_col"), replicas(m, row, 2, "emit_row")
        return col_here, row_here, [c & r for c, r in zip(cols, rows)]

    def _row_words(self, m, rewind, x, fire):
        """Stage B: the ``K - 1`` line buffers give each kernel row one word per
        input word, registered (a block RAM's output is slow).  Data registers
        (pixel, row words, chains, tree nodes, sums) have no reset: only the
        valid bits travelling beside them do, which keeps the reset and flush
        nets of the tile small.  Returns (b_fire, row words top first)."""
        K, W = self._kernel, self._fmt.width
        a_x = Signal.like(x)
        a_fire = Signal()
        a_pixel = Signal(signed(W), reset_less=True)
        m.d.sync += [a_x.eq(x), a_fire.eq(fire), a_pixel.eq(self.i.payload.data)]
        column = [a_pixel]      # bottom (current row) first
        for r in range(K - 1):
            mem = Memory(shape=signed(W), depth=self._max_width, init=[])
            m.submodules[f"line_{r}"] = mem
            rd = mem.read_port()
            wr = mem.write_port()
            m.d.comb += [
                rd.addr.eq(x),
                wr.addr.eq(a_x),
                wr.data.eq(column[-1]),     # each row moves one line up
                wr.en.eq(a_fire),
            ]
            column.append(rd.data)
        column.reverse()        # top (oldest row) first
        b_fire = Signal()
        row_word = [Signal(signed(W), name=f"row_word_{r}", reset_less=True) for r in range(K)]
        # A start drops the words in flight (a frame's trailing words that
        # complete no window), so none of their products, made with the
        # kernel before it or the next, reaches the chains cleared by it.
        m.d.sync += [b_fire.eq(a_fire & ~rewind)] + [row_word[r].eq(column[r]) for r in range(K)]
        return b_fire, row_word

    def _row_chains(self, m, platform, bank, b_fire, row_word):
        """Stages C to E: each kernel row's products, then a transposed chain.
        Link c of row r adds its product to link c - 1's partial sum of the
        previous word, so after word t link K - 1 holds sum_c weight[r][c] *
        word(t - (K - 1 - c)): the row of the window ending at t.  A row's word
        enters its K multipliers once (no window register), and each product
        is added beside its multiplier (no K*K-leaf tree).  The MAX chains keep running
        maxima of the words inside the k x k corner (MIN outside).  A start
        clears the chains, so no partial sum made with the previous kernel
        reaches a window.  Each row takes the start and its words' valid bits
        through replicas of its own, beside its links (one rewind register's
        net over the convolver's multipliers into the links' resets was a
        critical path).  Returns (row sums, row maxima)."""
        K, W = self._kernel, self._fmt.width
        mask = [[Signal(name=f"mask_{r}_{c}", reset_less=True) for c in range(K)] for r in range(K)]
        for r in range(K):
            for c in range(K):
                m.d.sync += mask[r][c].eq(bank.in_corner(r, c))
        # Each product comes from a multiplier with its own input and output
        # registers (registered_product); the chains take it, and the MAX
        # chains their word through as many registers, MULTIPLIER_LATENCY
        # cycles after the word fires.
        row_sums, row_maxes = [], []
        for r in range(K):
            (rewind,) = replicas(m, self.start, 1, f"rewind_row_{r}", reset_less=True)    # as activation's
            fires = [b_fire]
            for n in range(MULTIPLIER_LATENCY):
                fires += replicas(m, fires[-1] & ~rewind, 1, f"product_fire_{r}_{n}")
            p_fire = fires[-1]
            # The row's word, a register per stage; the last stage is a
            # register per link, beside it, with the word masked already.
            word_q = row_word[r]
            for n in range(MULTIPLIER_LATENCY - 1):
                held = Signal(signed(W), name=f"chain_word_{r}_{n}", reset_less=True)
                with m.If(fires[n]):
                    m.d.sync += held.eq(word_q)
                word_q = held
            partial, best = 0, None
            for c in range(K):
                product = registered_product(m, platform, row_word[r], bank.kernel[r][c], fires[0], fires[1],
                                             f"multiplier_{r}_{c}")
                link = Signal(signed(2 * W + c.bit_length()), name=f"chain_{r}_{c}", reset_less=True)
                link_max = Signal(signed(W), name=f"chain_max_{r}_{c}", reset_less=True)
                word = Signal(signed(W), name=f"chain_word_{r}_{c}_masked", reset_less=True)
                with m.If(fires[MULTIPLIER_LATENCY - 1]):
                    m.d.sync += word.eq(Mux(mask[r][c], word_q, self._fmt.min))
                with m.If(rewind):
                    m.d.sync += [link.eq(0), link_max.eq(self._fmt.min)]
                with m.Elif(p_fire):
                    m.d.sync += [
                        link.eq(partial + product),
                        link_max.eq(word if best is None else Mux(word > best, word, best)),
                    ]
                partial, best = link, link_max
            row_sums.append(partial)
            row_maxes.append(best)
        return row_sums, row_maxes

    def _tree(self, m, leaves, name, node_shape, combine):
        """A registered tree over the K rows, one level a cycle; returns its root."""
        for level in range(self._tree_levels):
            nodes = []
            for n in range(0, len(leaves), 2):
                node = Signal(node_shape(level), name=f"{name}_{level}_{n // 2}", reset_less=True)
                pair = leaves[n:n + 2]
                m.d.sync += node.eq(combine(*pair) if len(pair) == 2 else pair[0])
                nodes.append(node)
            leaves = nodes
        assert len(leaves) == 1
        return leaves[0]
