"""Formal proofs of the stream parts every result depends on (SymbiYosys with
z3, from PyPI; see tests/formal.py), each also shown to fail on a deliberately
broken variant of the design:

* :class:`StreamFIFO`: the k-th word in is the k-th word out, exactly once, for
  any k; the output holds its word until taken; ``level`` counts the words held.
* The FIFOs whose ``ready`` is a registered credit (:class:`PushedFIFO`):
  a global output line's (behind a tile's :class:`CreditPusher`), a tile's
  sinks and the FIFO bank's never meet a word when full.
* :class:`CreditBuffer`: a pipeline that issues only on ``credit`` never
  writes into a full buffer, however its consumer withholds ``ready``.
* The convolver's credit accounting: its output buffer is never written when
  full (the same property, inside a whole convolver), nor is its partial-sum
  join's.
* :class:`StreamPort`'s window check: after a start with a descriptor outside
  its window (or memory) the port never issues a memory request and reports
  an error.
* The tile's router: every routed word reaches exactly the sinks selecting
  its source, and never a sink that is not ready, global lines pushed on the
  tile's credit included, with routes, starts and flushes at any time.
"""

import functools

import pytest
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume, Cat, Const, Elaboratable, Module, ResetInserter, ResetSignal, Signal
from amaranth.lib import wiring

from formal import check_proof
from helpers import Forked, Line
from neuflow_hdl import convolver as convolver_module
from neuflow_hdl import fifo_bank as fifo_bank_module
from neuflow_hdl import stream as stream_module
from neuflow_hdl import tile as tile_module
from neuflow_hdl.convolver import Convolver, PartialSumJoin
from neuflow_hdl.fifo_bank import BankFIFO
from neuflow_hdl.numerics import Format
from neuflow_hdl.regs import NEIGHBOURS, sample_layout
from neuflow_hdl.grid import LINE_DEPTH
from neuflow_hdl.stream import CreditBuffer, PushedFIFO, SinkFIFO, StreamFIFO, delay_line
from neuflow_hdl.streamer import StreamPort
from neuflow_hdl.tile import Tile

pytestmark = pytest.mark.formal

WIDTH = 4           # payload bits in the stream proofs: the order property does not depend on it


class StreamOrder(Elaboratable):
    """A free environment around a stream component ``dut`` (``i`` -> ``o``):
    the producer keeps a word offered, unchanged, until it is taken; the
    consumer's ``ready`` is free.  Asserts that the k-th word taken at ``o``
    is the k-th word given at ``i`` (k any constant), that no word is taken
    before it was given, and that ``o`` holds its word until taken."""

    def __init__(self, dut, width, count_bits=5, level=None):
        self.dut, self.width, self.bits, self.level = dut, width, count_bits, level

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.d.comb += [Assume(~ResetSignal()), dut.i.valid.eq(AnySeq(1)),
                     dut.i.payload.eq(AnySeq(self.width)), dut.o.ready.eq(AnySeq(1))]
        took_in = dut.i.valid & dut.i.ready
        took_out = dut.o.valid & dut.o.ready
        # Stream rules: an offered word stays, unchanged, until taken (assumed of
        # the producer, asserted of the component's output).
        for port, check in ((dut.i, Assume), (dut.o, Assert)):
            held = Signal(name=f"held_{'in' if check is Assume else 'out'}")
            word = Signal(self.width, name=f"word_{'in' if check is Assume else 'out'}")
            m.d.sync += [held.eq(port.valid & ~port.ready), word.eq(port.payload)]
            with m.If(held):
                m.d.comb += [check(port.valid), check(port.payload == word)]
        n_in, n_out = Signal(self.bits), Signal(self.bits)
        m.d.sync += [n_in.eq(n_in + took_in), n_out.eq(n_out + took_out)]
        m.d.comb += Assume(n_in != 2 ** self.bits - 1)      # no counter wrap
        k = AnyConst(self.bits)
        seen, have = Signal(self.width), Signal()
        with m.If(took_in & (n_in == k)):
            m.d.sync += [seen.eq(dut.i.payload), have.eq(1)]
        with m.If(took_out & (n_out == k)):
            m.d.comb += [Assert(have), Assert(dut.o.payload == seen)]
        m.d.comb += [Assert(n_out <= n_in), Assert(have == (n_in > k))]
        if self.level is not None:
            m.d.comb += Assert(self.level(dut) == n_in - n_out)
        return m


class _DroppingFIFO(StreamFIFO):
    """Broken on purpose: it claims to be ready when full (and drops the word)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.i.ready.eq(1)
        return m


# (FIFO, its broken variant, depth, cycles): bounded, because induction would
# need the storage in the invariant; the cycles fill and drain each FIFO more
# than twice (its pointers wrap).
FIFOS = {"StreamFIFO": (StreamFIFO, _DroppingFIFO, 3, 12)}


@pytest.mark.parametrize("broken", [False, True], ids=["intact", "broken"])
@pytest.mark.parametrize("name", list(FIFOS))
def test_fifo_keeps_every_word_in_order(tmp_path, name, broken):
    intact, faulty, depth, cycles = FIFOS[name]
    fifo = (faulty if broken else intact)(WIDTH, depth)
    check_proof(StreamOrder(fifo, WIDTH, level=lambda d: d.level), tmp_path, broken=broken,
                mode="bmc", depth=cycles)


def _probed(fifo_class, loose=False):
    """``fifo_class`` (a PushedFIFO) asserting that no word entering its
    storage meets it full (``overflow``; ``made`` lists the instances, which
    a harness may count after elaboration); ``loose``: broken on purpose,
    its credit forgets a word on its way."""

    class Probed(fifo_class):
        made = []

        def __init__(self, shape, depth):
            super().__init__(shape, depth)
            self.overflow = Signal(name="probe_overflow")
            Probed.made.append(self)

        def elaborate(self, platform):
            m = super().elaborate(platform)
            buf = m.submodules.fifo
            m.d.comb += [self.overflow.eq(buf.i.valid & ~buf.i.ready), Assert(~self.overflow)]
            if loose:
                credit = Signal()
                m.d.sync += credit.eq(self.level <= self._depth - self.lag + 1)
                m.d.comb += self.i.ready.eq(credit)
            return m

    return Probed


class CreditedFIFOSpec(Elaboratable):
    """``fifo`` (probed), written by a router's fork (:class:`Forked`) or
    (``line``) behind a tile's CreditPusher as on a global output line, with
    a free writer and a free consumer: no word ever meets a full FIFO (so
    none is lost), however the consumer withholds ``ready``."""

    def __init__(self, fifo, line):
        self.fifo, self.line = fifo, line

    def elaborate(self, platform):
        m = Module()
        if self.line:
            m.submodules.line = dut = Line(WIDTH, self.fifo._depth, fifo=self.fifo)
            out = dut.o
        else:
            m.submodules.fork = dut = Forked(WIDTH)
            m.submodules.fifo = self.fifo
            wiring.connect(m, dut.o, self.fifo.i)
            out = self.fifo.o
        m.d.comb += [Assume(~ResetSignal()), dut.i.valid.eq(AnySeq(1)),
                     dut.i.payload.eq(AnySeq(WIDTH)), out.ready.eq(AnySeq(1))]
        return m


# (FIFO class, depth, behind a CreditPusher): a global output line's FIFO,
# a tile's sink (written by a fork), the FIFO bank's.
CREDITED = {"line": (PushedFIFO, LINE_DEPTH, True), "sink": (SinkFIFO, SinkFIFO.min_depth, False),
            "bank": (BankFIFO, BankFIFO.min_depth, False)}


@pytest.mark.parametrize("broken", [False, True], ids=["intact", "loose"])
@pytest.mark.parametrize("name", list(CREDITED))
def test_a_credited_fifo_is_never_overfilled(tmp_path, name, broken):
    """Inductive, with the FIFOs' pointer invariants (the "formal" platform)."""
    fifo_class, depth, line = CREDITED[name]
    check_proof(CreditedFIFOSpec(_probed(fifo_class, broken)(WIDTH, depth), line), tmp_path,
                broken=broken, mode="prove", depth=8, platform="formal")


class _ProbedCreditBuffer(CreditBuffer):
    """A CreditBuffer that shows its FIFO's level and whether a write met a full
    FIFO (``overflow``), as signals made at construction so a harness can use
    them before the buffer is elaborated; ``made`` lists the instances."""

    made = []

    def __init__(self, shape, latency, slack=0, copies=1, *, loose=False):
        super().__init__(shape, latency, slack, copies)
        self.depth = self._depth
        if loose:               # broken on purpose: one credit too many
            self._threshold += 1
        self.level = Signal(range(self._depth + 1), name="probe_level")
        self.overflow = Signal(name="probe_overflow")
        _ProbedCreditBuffer.made.append(self)

    def elaborate(self, platform):
        m = super().elaborate(platform)
        buf = m.submodules.fifo
        m.d.comb += [self.level.eq(buf.level), self.overflow.eq(buf.w_en & ~buf.w_rdy)]
        return m


class CreditSpec(Elaboratable):
    """A pipeline of ``latency`` cycles that issues a word whenever the free
    producer wants to and ``credit`` allows, into a CreditBuffer whose consumer
    is free.  Asserts the credit invariant (words held plus words in flight
    never exceed the buffer's depth) and that no write meets a full buffer."""

    def __init__(self, latency, slack, loose=False):
        self.dut = _ProbedCreditBuffer(WIDTH, latency, slack, loose=loose)
        self.latency = latency

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.d.comb += [Assume(~ResetSignal()), dut.o.ready.eq(AnySeq(1))]
        flight = delay_line(m, 1, self.latency, name="flight")
        m.d.sync += flight[0].eq(AnySeq(1) & dut.credit)
        m.d.comb += [dut.i.valid.eq(flight[-1]), dut.i.payload.eq(AnySeq(WIDTH))]
        in_flight = sum(flight[:-1], 0) if self.latency > 1 else 0
        m.d.comb += [Assert(dut.level + flight[-1] + in_flight <= dut.depth), Assert(~dut.overflow)]
        return m


@pytest.mark.parametrize("broken", [False, True], ids=["CreditBuffer", "broken-credit"])
def test_credit_buffer_is_never_written_when_full(tmp_path, broken):
    """Inductive (unbounded) proof of the intact buffer for a 5-cycle pipeline."""
    check_proof(CreditSpec(latency=5, slack=1, loose=broken), tmp_path, broken=broken,
                mode="prove", depth=4, platform="formal")


class _CreditBlindConvolver(Convolver):
    """Broken on purpose: a window fires without an output-buffer credit."""

    def _frame_position(self, m, rewind, taking, credit, flag_error):
        return super()._frame_position(m, rewind, taking, Const(-1, len(credit)), flag_error)


def _free_streams(m, *ports):
    """Drive each input stream of ``ports`` with a free valid and payload."""
    for port in ports:
        bits = port.payload.as_value()
        m.d.comb += [port.valid.eq(AnySeq(1)), bits.eq(AnySeq(len(bits)))]


class ConvolverCreditSpec(Elaboratable):
    """A whole convolver (K = 2, 6-bit words, rows of 4) with a free
    configuration (held constant), free input, partial-sum and weight streams,
    free starts and a free consumer: its output buffer is never written when
    full."""

    def __init__(self, convolver_class):
        self.convolver_class = convolver_class

    def elaborate(self, platform):
        m = Module()
        _ProbedCreditBuffer.made.clear()
        conv = self.convolver_class(kernel=2, max_width=4, fmt=Format(6, 2), psum_slack=0)
        m.submodules.dut = conv.elaborate(platform)     # makes its (probed) output buffer now
        (out,) = _ProbedCreditBuffer.made
        cfg = AnyConst(conv.config.shape().size)
        m.d.comb += [Assume(~ResetSignal()), conv.config.as_value().eq(cfg),
                     conv.start.eq(AnySeq(1)), conv.o.ready.eq(AnySeq(1))]
        _free_streams(m, conv.i, conv.psum, conv.weights)
        m.d.comb += Assert(~out.overflow)
        return m


@pytest.mark.parametrize("broken", [False, True], ids=["Convolver", "broken-convolver"])
def test_convolver_never_overfills_its_output_buffer(tmp_path, monkeypatch, broken):
    monkeypatch.setattr(convolver_module, "CreditBuffer", _ProbedCreditBuffer)
    spec = ConvolverCreditSpec(_CreditBlindConvolver if broken else Convolver)
    check_proof(spec, tmp_path, broken=broken, mode="bmc", depth=20)


class JoinCreditSpec(Elaboratable):
    """The convolver's partial-sum join alone (6-bit words) with free sums,
    partial sums, shift and consumer: its output buffer is never written
    when full (its stages never stall; a sum is taken only on credit)."""

    def elaborate(self, platform):
        m = Module()
        _ProbedCreditBuffer.made.clear()
        join = PartialSumJoin(width=6, acc_width=16)
        m.submodules.dut = join.elaborate(platform)
        (out,) = _ProbedCreditBuffer.made
        m.d.comb += [Assume(~ResetSignal()), join.o.ready.eq(AnySeq(1)), join.use_psum.eq(AnySeq(1)),
                     join.shift.eq(AnySeq(len(join.shift)))]
        _free_streams(m, join.sums, join.psum)
        m.d.comb += Assert(~out.overflow)
        return m


@pytest.mark.parametrize("broken", [False, True], ids=["PartialSumJoin", "loose-join"])
def test_partial_sum_join_never_overfills_its_output_buffer(tmp_path, monkeypatch, broken):
    monkeypatch.setattr(convolver_module, "CreditBuffer", functools.partial(_ProbedCreditBuffer, loose=broken))
    check_proof(JoinCreditSpec(), tmp_path, broken=broken, mode="prove", depth=4, platform="formal")


class _WindowlessPort(StreamPort):
    """Broken on purpose: a start begins the transfer whatever the window check says."""

    def _start(self, m):
        port = super()._start(m)
        with m.If(self.start):
            m.d.sync += [port.reading.eq(~self.desc.write), port.writing.eq(self.desc.write)]
        return port


class WindowSpec(Elaboratable):
    """A streamer port started only with descriptors outside their window or the
    memory (free otherwise: any base, size, stride, direction, line, any start
    times): it never issues a memory request, is never busy, and reports an
    error after its first start."""

    MEMORY_WORDS = 64

    def __init__(self, port_class):
        self.dut = port_class(memory_words=self.MEMORY_WORDS, beat_words=4, fmt=Format(4, 1))

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        d = dut.desc
        m.d.comb += [Assume(~ResetSignal()), d.as_value().eq(AnySeq(d.shape().size)),
                     dut.start.eq(AnySeq(1)), dut.o.ready.eq(AnySeq(1)), dut.i.valid.eq(AnySeq(1)),
                     dut.i.payload.as_value().eq(AnySeq(len(dut.i.payload.as_value()))),
                     dut.bus.cmd.ready.eq(AnySeq(1)), dut.bus.resp.valid.eq(AnySeq(1)),
                     dut.bus.resp.payload.eq(AnySeq(len(dut.bus.resp.payload)))]
        last = Signal(66)
        m.d.comb += last.eq(d.base + (d.height - 1) * d.stride + d.width - 1)
        outside = ((d.width == 0) | (d.height == 0) | (d.base < d.window_base) |
                   (last >= d.window_base + d.window_size) | (last >= self.MEMORY_WORDS))
        with m.If(dut.start):
            m.d.comb += Assume(outside)
        started = Signal()
        with m.If(dut.start):
            m.d.sync += started.eq(1)
        m.d.comb += [Assert(~dut.bus.cmd.valid), Assert(~dut.busy)]
        with m.If(started):
            m.d.comb += Assert(dut.error)
        return m


@pytest.mark.parametrize("broken", [False, True], ids=["StreamPort", "broken-window"])
def test_a_port_outside_its_window_never_touches_memory(tmp_path, broken):
    check_proof(WindowSpec(_WindowlessPort if broken else StreamPort), tmp_path, broken=broken,
                mode="prove", depth=3)


class _ProbedTile(Tile):
    """A tile that keeps its router's sources, sink FIFOs and routes for a harness."""

    def _router(self, m, start, sources, sink_fifo, routes):
        self.probe = (sources, sink_fifo, routes)
        return super()._router(m, start, sources, sink_fifo, routes)


class _AnyReadyTile(_ProbedTile):
    """Broken on purpose: a source moves a word when any reader is ready, so a
    reader that is not ready is overfilled."""

    def _router(self, m, start, sources, sink_fifo, routes):
        self.probe = (sources, sink_fifo, routes)
        select = routes.select
        for s, source in enumerate(sources):
            users = [select[k] == s for k in range(len(self.sinks))]
            m.d.comb += source.ready.eq(Cat(u & sink.ready for u, sink in zip(users, sink_fifo)).any())
            moved = source.valid & source.ready
            for k, sink in enumerate(sink_fifo):
                with m.If(select[k] == s):
                    m.d.comb += [sink.valid.eq(moved), sink.payload.eq(source.payload)]
        for g in range(self._globals):
            m.d.comb += self.global_used[g].eq(Cat(sel == len(NEIGHBOURS) + g for sel in select).any())


class ForkSpec(Elaboratable):
    """One tile (K = 1, 4-bit words, every neighbour) with free configuration
    writes (routes, starts and flushes at any time), free streams on every
    input and free consumers; a global line's words pushed as the grid pushes
    them (a cycle after the tile's credit and a free offer).  For every
    source and every sink that selects it: the sink gets a word exactly when
    the source moves one, and no sink's FIFO (each probed) ever meets
    a word when full (so none is dropped or duplicated: the forks' registered
    credits and, for a global line, the tile's credit kept their promises);
    an unused source moves nothing; an unrouted sink gets nothing; the
    router's decode of the routes always equals the routes."""

    def __init__(self, tile_class):
        self.tile = tile_class(kernel=1, max_width=2, globals_=2, fifos=1, fifo_depth=6,
                               input_depth=SinkFIFO.min_depth, segments=1, fmt=Format(4, 1),
                               neighbours=(True, True, True, True))

    def elaborate(self, platform):
        m = Module()
        tile = self.tile
        m.submodules.tile = tile.elaborate(platform)
        sources, sinks, routes = tile.probe
        select = routes.select
        m.d.comb += [Assume(~ResetSignal()), tile.addr.as_value().eq(AnySeq(len(tile.addr.as_value()))),
                     tile.wdata.eq(AnySeq(len(tile.wdata))), tile.we.eq(AnySeq(1))]
        for d in NEIGHBOURS:
            port_in, port_out = getattr(tile, f"{d}_in"), getattr(tile, f"{d}_out")
            m.d.comb += [port_in.valid.eq(AnySeq(1)), port_out.ready.eq(AnySeq(1)),
                         port_in.payload.as_value().eq(AnySeq(len(port_in.payload.as_value())))]
        for g in range(tile._globals):
            line = tile.global_in[g]
            # The grid of one tile: a word offered on the tile's credit is
            # pushed the next cycle.
            m.d.sync += line.valid.eq(AnySeq(1) & line.ready & tile.global_used[g])
            m.d.comb += line.payload.as_value().eq(AnySeq(len(line.payload.as_value())))
            # The grid's FIFO of the output line, emptied by a free consumer.
            out = PushedFIFO(sample_layout(tile._fmt.width), LINE_DEPTH)
            m.submodules[f"line_{g}"] = ResetInserter({"sync": tile.global_flush[g]})(out)
            wiring.connect(m, tile.global_out[g], out.i)
            m.d.comb += [out.o.ready.eq(AnySeq(1)), tile.global_held[g].eq(out.level != 0)]
        first_global = len(NEIGHBOURS)
        for s, source in enumerate(sources):
            users = [sel == s for sel in select]
            # The router's decode of the routes is the routes (it changes with them).
            m.d.comb += Assert(routes.users[s] == Cat(users))
            if first_global <= s < first_global + tile._globals:
                moved = source.valid
            else:
                moved = source.valid & source.ready
                m.d.comb += Assert(~source.ready | Cat(users).any())
            for u, sink in zip(users, sinks):
                with m.If(u):
                    m.d.comb += [Assert(sink.valid == moved),
                                 Assert(~moved | (sink.payload == source.payload))]
        for sel, sink in zip(select, sinks):
            with m.If(sel >= len(sources)):
                m.d.comb += Assert(~sink.valid)
        return m


@pytest.mark.parametrize("broken", [False, True], ids=["router-fork", "broken-fork"])
def test_a_fork_moves_a_word_only_when_every_reader_takes_it(tmp_path, monkeypatch, broken):
    """Inductive: a global line's credit is a promise about the cycle after
    next, kept by the FIFOs' levels, so the proof takes the invariants of
    their pointers (the "formal" platform).  Every sink FIFO the tile makes
    is probed for a word meeting it full."""
    sink, bank = _probed(SinkFIFO), _probed(BankFIFO)
    for module in (tile_module, stream_module):
        monkeypatch.setattr(module, "SinkFIFO", sink)
    monkeypatch.setattr(fifo_bank_module, "BankFIFO", bank)
    spec = ForkSpec(_AnyReadyTile if broken else _ProbedTile)
    check_proof(spec, tmp_path, broken=broken, mode="prove", depth=4, platform="formal")
    # Every sink's FIFO was probed: the operator inputs', the neighbour
    # outputs', the global output pushers' and the bank's.
    assert len(sink.made) + len(bank.made) == len(spec.tile.sinks)
