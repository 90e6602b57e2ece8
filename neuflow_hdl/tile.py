"""The processing tile: convolver, StreamALU, mapper and FIFO bank behind a router."""

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .alu import StreamALU
from .convolver import Convolver
from .fifo_bank import FifoBank
from .mapper import Mapper
from .numerics import Q8_8
from .regs import (ALU_CONFIG, CONFIG_ADDRESS, CONTROL, CONTROL_REG, CONV_CONFIG, NEIGHBOURS,
                   REGISTER_BITS, ROUTE_BITS, ROUTE_NONE, STATUS, Unit, mapper_config_layout,
                   router_sinks, router_sources, sample_layout, hdl_register_enables, hdl_write_registers)
from .stream import PUSHED_FIFO_LATENCY, CreditPusher, SinkFIFO, full_rate_depth, replica

__all__ = ["Tile", "Routes", "sink_room", "CONTROL_LAG", "LINE_CREDIT_LAG", "LINE_SINK_DEPTH", "OUTPUT_DEPTH",
           "SINK_LATENCY", "STATUS_LAG"]


class Routes:
    """A tile's active routes: ``select`` (each sink's source code), ``users``
    (per source, bit ``k`` set when sink ``k`` selects it), ``error`` (a
    select is illegal) and ``driven`` (per global output line, whether its
    sink selects a source); the decodes change only when the selects do."""

    def __init__(self, select, users, error, driven):
        self.select, self.users, self.error, self.driven = select, users, error, driven

#: Words a global input line may push into a sink that the line's credit did
#: not count (see :func:`sink_room`).
LINE_CREDIT_LAG = 4

#: The fewest words with which a sink takes a global line at full rate, the
#: line's credit leaving room for :data:`LINE_CREDIT_LAG` words.
LINE_SINK_DEPTH = full_rate_depth(LINE_CREDIT_LAG)

#: Words of each tile-output FIFO: the fewest that take a global line at
#: full rate (at least the fewest a SinkFIFO keeps full rate with).
OUTPUT_DEPTH = max(SinkFIFO.min_depth, LINE_SINK_DEPTH)

#: Cycles from the router moving a word into a sink to the word at the
#: sink's output (its operator's input, or its neighbour's): a SinkFIFO.
SINK_LATENCY = PUSHED_FIFO_LATENCY

#: Cycles from the tile's configuration input register taking a CONTROL
#: write to its ``start`` and ``flush`` acting (decoded after that register).
CONTROL_LAG = 1

#: Cycles a tile's STATUS lags the tile: each part's holding flag beside
#: it, each kind of part's, then the status register.
STATUS_LAG = 3


def sink_room(level, depth):
    """Whether a sink has room for every word a global line may push into it
    that the line's credit did not count: its ``level`` leaves room for
    :data:`LINE_CREDIT_LAG` words.  The tile takes it into a register beside
    the sink (:meth:`Tile._sink_fifos`) and the line's credit register ANDs
    those (:meth:`Tile._global_credits`), so a word is pushed three cycles
    after the level it was promised on; with the one the sink may take
    meanwhile, that is four.  A function of registers alone, so no handshake
    is on the path into a credit; a sink of :data:`LINE_SINK_DEPTH` words or
    more keeps full rate."""
    return level <= depth - LINE_CREDIT_LAG


class Tile(wiring.Component):
    """One processing tile.

    Every operator input and every tile output is a FIFO fed by the router:
    each sink selects one source (a neighbour, a global line, or one of the
    tile's own operators; see :func:`regs.router_sinks` and
    :func:`regs.router_sources`).  A source feeding several sinks moves a
    word only when all of them can take it, so nothing is lost or duplicated.
    Every sink is a :class:`SinkFIFO`: its ``ready`` is a flip-flop (a credit
    with room for the words the fork may move while it is computed and
    read), a source's ``ready`` is a register of its sinks' credits, and the
    word moved enters each sink's input register, so a fork's decision is a
    flip-flop into registers: no path runs from one FIFO's level through a
    fork into another FIFO's storage, and forks form no combinational loop,
    inside a tile or across tiles.

    Configuration writes (``we``, ``addr``, ``wdata``, taken through a
    register as on every responder of :mod:`.cfgbus`) fill *shadow*
    registers; a CONTROL write with ``start`` copies them all to the active
    registers at once and rewinds the operators, so writes take effect between
    frames.  ``flush`` empties every FIFO and pipeline of the tile.

    Global input lines are shared by all tiles, so their forks span the grid;
    to keep that span out of any combinational path they are pushed, not
    handshaken: ``global_in[g].ready`` is a registered credit, high when
    every sink of the tile reading line ``g`` will have room for a word
    pushed on the cycle after next (see :func:`sink_room`), and a word comes
    with ``global_in[g].valid`` and is taken, whatever ``ready`` says then.
    The grid commits a word only on every reading tile's credit
    (``global_used``), and pushes it from a register a cycle later.

    A global output line's FIFO is the grid's, one per line (a line has one
    driver), far from most tiles, so the tile's sink for line ``g`` is a
    :class:`CreditPusher`: ``global_out[g]`` pushes its words from a
    register on the line's registered credit (``global_out[g].ready``, the
    grid's :class:`PushedFIFO`'s), and the grid takes every word pushed.
    The grid reports whether the line's FIFO holds words (``global_held``)
    and when a word with ``eof`` leaves it (``global_last``); the tile
    counts them for the lines it drives (``global_driven``) as it counts its
    own output FIFOs, and asks the grid to empty them when it is flushed
    (``global_flush``).

    Parameters
    ----------
    kernel, max_width : convolver parameters.
    globals_ : number of global lines in each direction.
    fifos, fifo_depth : FIFO bank.
    input_depth : depth of each operator-input FIFO (NeuFlow: 64 words).
    segments : mapper segments.
    neighbours : which of north, east, south, west exist (routes to or from a
        missing one are configuration errors).
    """

    def __init__(self, *, kernel=3, max_width=64, globals_=4, fifos=2, fifo_depth=64,
                 input_depth=16, segments=8, fmt=Q8_8, neighbours=(True, True, True, True)):
        self._kernel, self._max_width, self._globals = kernel, max_width, globals_
        self._fifos, self._fifo_depth, self._input_depth = fifos, fifo_depth, input_depth
        self._segments, self._fmt, self._neighbours = segments, fmt, tuple(neighbours)
        self.sources = router_sources(globals_, fifos)
        self.sinks = router_sinks(globals_, fifos)
        sample = stream.Signature(sample_layout(fmt.width))
        ports = {
            "we": In(1),
            "addr": In(CONFIG_ADDRESS),
            "wdata": In(REGISTER_BITS),
            "status": Out(STATUS),
            "global_in": In(sample).array(globals_),
            "global_used": Out(globals_),
            "global_out": Out(sample).array(globals_),
            "global_driven": Out(globals_),
            "global_held": In(globals_),
            "global_last": In(globals_),
            "global_flush": Out(globals_),
        }
        for d in NEIGHBOURS:
            ports[f"{d}_in"] = In(sample)
            ports[f"{d}_out"] = Out(sample)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        start, flush, cfg, routes = self._configuration(m)
        conv, alu, mapper, bank = self._operators(m, start, flush, cfg)
        sink_fifo, held, out_fifos, room = self._sink_fifos(m, flush, cfg, conv, alu, mapper, bank)
        sources = ([getattr(self, f"{d}_in") for d in NEIGHBOURS] + list(self.global_in) +
                   [conv.o, alu.o, mapper.o] + [bank.o[n] for n in range(self._fifos)])
        assert len(sources) == len(self.sources)
        self._router(m, start, sources, sink_fifo, routes)
        self._global_credits(m, start, room, routes)
        self._status(m, start, flush("status"), routes, (conv, alu, mapper, bank), held, out_fifos)
        return m

    def _configuration(self, m):
        """Configuration registers: shadow copies written over the bus, made active
        by CONTROL.start.  Returns (start, flush, {unit: active registers},
        [source select of each sink]); ``flush(user)`` makes a replica of the
        flush register for one user."""
        # The bus's input register (see cfgbus); CONTROL's two commands are
        # decoded after it, in the tile (the grid's bus register is across
        # the die from most tiles: decoding before the tile's register was a
        # critical path), so start and flush come a cycle after a shadow
        # register's write would, and reach every FIFO of the tile straight
        # from a register.
        we = Signal(name="cfg_we")
        addr = Signal.like(self.addr, name="cfg_addr")
        wdata = Signal.like(self.wdata, name="cfg_wdata")
        start = Signal()
        control = Signal(CONTROL)
        m.d.comb += control.eq(wdata)
        write_control = we & (addr.unit == Unit.CONTROL) & (addr.reg == CONTROL_REG)
        m.d.sync += [we.eq(self.we), addr.eq(self.addr), wdata.eq(self.wdata),
                     start.eq(write_control & control.start)]

        def command(name, user):
            """A replica of CONTROL's ``name`` command register (``start`` or
            ``flush``) for ``user`` (a unit of the tile, or its status), each
            beside its user, all set on the same cycle as ``start`` (one
            register's net across the tile was a critical path)."""
            register = replica(name=f"{name}_{user}")
            m.d.sync += register.eq(write_control & getattr(control, name))
            return register

        def flush(user):
            return command("flush", user)

        def unit_bus(unit, layout):
            """The bus a second time, registered for one unit: the write
            enable of each of its registers decoded, and the data a replica,
            beside its shadow registers (one input register's nets to every
            shadow write enable of the tile, then the decode beside them, were
            critical paths, nearly all wire).  A write reaches its shadow
            register two cycles after the tile's input register took it; a
            CONTROL start on the bus's next cycle sets ``start`` on that same
            cycle, and ``start`` copies the shadows a cycle later: writes
            before a start are in what it copies, writes after it are not."""
            name = unit.name.lower()
            decoded = hdl_register_enables(we & (addr.unit == unit), addr.reg, layout)
            enables = [Signal(name=f"cfg_we_{name}_{r}") for r in range(len(decoded))]
            unit_wdata = replica(len(wdata), name=f"cfg_wdata_{name}")
            m.d.sync += [e.eq(d) for e, d in zip(enables, decoded)] + [unit_wdata.eq(wdata)]
            return enables, unit_wdata

        def registers(unit, layout, init=None):
            """A unit's shadow and active registers, the shadows written from
            the unit's own bus register, the copy on a replica of ``start``
            beside them."""
            shadow = Signal(layout, init=init)
            active = Signal(layout, init=init)
            hdl_write_registers(m, shadow, *unit_bus(unit, layout))
            with m.If(command("start", unit.name.lower())):
                m.d.sync += active.eq(shadow)
            return shadow, active

        layouts = {Unit.CONVOLVER: CONV_CONFIG, Unit.ALU: ALU_CONFIG,
                   Unit.MAPPER: mapper_config_layout(self._fmt.width, self._segments),
                   Unit.FIFO_BANK: data.StructLayout({"chain": self._fifos})}
        cfg = {unit: registers(unit, layout)[1] for unit, layout in layouts.items()}
        # One register per sink: ROUTE_BITS of every 32-bit register are used.
        route_regs = data.ArrayLayout(data.StructLayout({"select": ROUTE_BITS,
                                                         "reserved": REGISTER_BITS - ROUTE_BITS}),
                                      len(self.sinks))
        shadow, active = registers(Unit.ROUTER, route_regs, init=[{"select": ROUTE_NONE}] * len(self.sinks))
        return start, flush, cfg, self._routes(m, start, [shadow[k].select for k in range(len(self.sinks))],
                                               [active[k].select for k in range(len(self.sinks))])

    def _routes(self, m, start, shadow, select):
        """The active routes, and their decodes made active with them (from the
        shadow selects, on the same ``start``): per source the mask of the sinks
        selecting it, whether a select is illegal, and which global output
        lines the tile drives.  So the router's forks, the status and the
        grid's choice of a line's driver compare no select in the cycles
        between starts."""
        users = [Signal(len(self.sinks), name=f"users_{name}") for name in self.sources]
        error = Signal()
        driven = Signal(self._globals, name="driven")
        with m.If(start):
            m.d.sync += [mask.eq(Cat(sel == s for sel in shadow)) for s, mask in enumerate(users)]
            m.d.sync += error.eq(self._illegal(shadow))
            m.d.sync += driven.eq(Cat(shadow[self.sinks.index(f"global_out_{g}")] != ROUTE_NONE
                                      for g in range(self._globals)))
        return Routes(select, users, error, driven)

    def _operators(self, m, start, flush, cfg):
        """The convolver, StreamALU, mapper and FIFO bank, emptied by flush.  They
        take ``start`` with the activation and rewind on the next cycle, from
        registers of their own, so they see the new configuration (the
        convolver's weight pointer depends on k)."""
        conv = Convolver(kernel=self._kernel, max_width=self._max_width, fmt=self._fmt)
        alu = StreamALU(fmt=self._fmt)
        mapper = Mapper(segments=self._segments, fmt=self._fmt, max_width=self._max_width)
        bank = FifoBank(count=self._fifos, depth=self._fifo_depth, fmt=self._fmt)
        for name, unit in (("convolver", conv), ("alu", alu), ("mapper", mapper), ("fifo_bank", bank)):
            m.submodules[name] = ResetInserter({"sync": flush(name)})(unit)
        m.d.comb += [conv.config.eq(cfg[Unit.CONVOLVER]), conv.start.eq(start),
                     alu.config.eq(cfg[Unit.ALU]), alu.start.eq(start),
                     mapper.config.eq(cfg[Unit.MAPPER]), mapper.start.eq(start), bank.chain.eq(cfg[Unit.FIFO_BANK].chain)]
        return conv, alu, mapper, bank

    def _sink_fifos(self, m, flush, cfg, conv, alu, mapper, bank):
        """A FIFO before every sink, in router order, each feeding its operator
        input or neighbour output, or pushing to a global output line's FIFO
        (the grid's).
        Returns (the sinks' inputs, the operator-input FIFOs and global-output
        pushers, the neighbour-output FIFOs, each sink's room for a pushed
        global word: :func:`sink_room`, in a register beside the sink)."""
        sample = sample_layout(self._fmt.width)

        def registered(name, room):
            flag = Signal(init=1, name=f"room_{name}")       # empty at reset
            m.d.sync += flag.eq(room)
            return flag

        def fifo(name, depth):
            unit = SinkFIFO(sample, depth)
            m.submodules[name] = ResetInserter({"sync": flush(name)})(unit)
            return unit

        sink_fifo, room, inputs = [], [], []
        for name, dest in (("convolver_in", conv.i), ("convolver_psum", conv.psum),
                           ("convolver_weights", conv.weights), ("alu_a", alu.a),
                           ("alu_b", alu.b), ("mapper_in", mapper.i)):
            unit = fifo(name, self._input_depth)
            wiring.connect(m, unit.o, dest)
            sink_fifo.append(unit.i)
            inputs.append(unit)
            room.append(registered(name, sink_room(unit.level, self._input_depth)))
        chained = cfg[Unit.FIFO_BANK].chain
        for n in range(self._fifos):                    # the bank is FIFOs already
            sink_fifo.append(bank.i[n])
            # A chained FIFO's input takes nothing.
            spare = registered(f"fifo_{n}", sink_room(bank.level[n], self._fifo_depth))
            room.append(spare & ~chained[n] if n > 0 else spare)
        out_fifos = []
        for d in NEIGHBOURS:
            unit = fifo(f"{d}_out", OUTPUT_DEPTH)
            wiring.connect(m, unit.o, wiring.flipped(getattr(self, f"{d}_out")))
            sink_fifo.append(unit.i)
            out_fifos.append(unit)
            room.append(registered(f"{d}_out", sink_room(unit.level, OUTPUT_DEPTH)))
        for g in range(self._globals):                  # toward the grid's line FIFOs
            unit = CreditPusher(sample, OUTPUT_DEPTH)
            m.submodules[f"global_out_{g}"] = ResetInserter({"sync": flush(f"global_out_{g}")})(unit)
            wiring.connect(m, unit.o, wiring.flipped(self.global_out[g]))
            sink_fifo.append(unit.i)
            inputs.append(unit)
            room.append(registered(f"global_out_{g}", sink_room(unit.level, OUTPUT_DEPTH)))
        assert len(sink_fifo) == len(room) == len(self.sinks)
        return sink_fifo, inputs, out_fifos, room

    def _router(self, m, start, sources, sink_fifo, routes):
        """Forks that wait for every consumer: a source moves a word when every
        sink selecting it was ready a cycle before (its ``ready`` a register
        of the sinks' credits, which count the word it may move meanwhile;
        none on the cycle after a ``start``, whose routes it did not see); a
        global line's word is pushed, on the credit of :meth:`_global_credits`."""
        first_global = len(NEIGHBOURS)
        ready = Signal(len(self.sinks))
        m.d.comb += ready.eq(Cat(sink.ready for sink in sink_fifo))
        select = routes.select
        fire = []
        for s, source in enumerate(sources):
            used = Signal(name=f"used_{self.sources[s]}")
            m.d.comb += used.eq(routes.users[s].any())
            moved = Signal(name=f"fire_{self.sources[s]}")
            if first_global <= s < first_global + self._globals:
                # Pushed: its sinks' room was promised (_global_credits).
                g = s - first_global
                m.d.comb += [self.global_used[g].eq(used), moved.eq(source.valid)]
            else:
                all_ready = Signal(name=f"all_ready_{self.sources[s]}")
                m.d.sync += all_ready.eq(~start & used & ((routes.users[s] & ~ready) == 0))
                m.d.comb += [source.ready.eq(all_ready), moved.eq(source.valid & source.ready)]
            fire.append(moved)
        # Each sink picks its source's word out of one vector of every source,
        # as an indexed part-select (a constant-time select for a simulator,
        # the same multiplexer for synthesis), padded so that every select
        # code, ROUTE_NONE included, is inside it (the padding offers nothing).
        width = len(sources[0].payload.as_value())
        offered = Signal(1 << ROUTE_BITS)
        words = Signal(width << ROUTE_BITS)
        m.d.comb += [offered.eq(Cat(fire)), words.eq(Cat(source.payload for source in sources))]
        for k, sink in enumerate(sink_fifo):
            m.d.comb += [sink.valid.eq(offered.bit_select(select[k], 1)),
                         sink.payload.eq(words.word_select(select[k], width))]

    def _global_credits(self, m, start, room, routes):
        """``global_in[g].ready``, registered: every sink reading line ``g`` has
        room for the words the line may push before the credit counts them
        (:func:`sink_room`).
        None on the cycle of a ``start`` nor on the next: a word promised
        then would reach the sinks of the new routes, which promised nothing."""
        first_global = len(NEIGHBOURS)
        spare = Signal(len(room))
        m.d.comb += spare.eq(Cat(room))
        for g in range(self._globals):
            credit = Signal(name=f"global_credit_{g}")
            m.d.sync += credit.eq(~start & ((routes.users[first_global + g] & ~spare) == 0))
            m.d.comb += self.global_in[g].ready.eq(credit & ~start)

    def _illegal(self, select):
        """Whether a sink selects a source that does not exist (or a missing
        neighbour): an expression of the selects ``select``."""
        bad = []
        for k, name in enumerate(self.sinks):
            legal = [s for s, src in enumerate(self.sources)
                     if not (src.endswith("_in") and src[:-3] in NEIGHBOURS
                             and not self._neighbours[NEIGHBOURS.index(src[:-3])])]
            exists = not (name.endswith("_out") and name[:-4] in NEIGHBOURS
                          and not self._neighbours[NEIGHBOURS.index(name[:-4])])
            ok = Cat(select[k] == s for s in legal).any() if exists else 0
            bad.append(~ok & (select[k] != ROUTE_NONE))
        return Cat(bad).any()

    def _status(self, m, start, flush, routes, units, held, out_fifos):
        """STATUS (busy and done :data:`STATUS_LAG` cycles old, the error
        causes a cycle old), and which global outputs this tile drives."""
        conv, alu, mapper, bank = units
        select, route_error = routes.select, routes.error
        m.d.comb += self.global_driven.eq(routes.driven)
        m.d.comb += self.global_flush.eq(Mux(flush, self.global_driven, 0))
        # Each part of the tile says whether it holds words through a register
        # beside it (a FIFO's level is an adder, compared with 0), then each
        # kind of part through one more (the sinks span a third of the die, so
        # that OR is the long wire); their OR is the status register's input.
        # Every flag is as old as every other, so ``holding`` is the state of
        # the whole tile on one cycle.
        parts = {"convolver": [conv.busy], "alu": [alu.busy], "mapper": [mapper.busy],
                 "bank": [bank.level[n] != 0 for n in range(self._fifos)],
                 "sinks": [u.level != 0 for u in held + out_fifos],
                 "lines": [(self.global_driven & self.global_held).any()]}
        part_holding = []
        for name, flags in parts.items():
            near = []
            for n, flag in enumerate(flags):
                near.append(Signal(name=f"holds_{name}_{n}"))
                m.d.sync += near[-1].eq(flag & ~flush)     # a flush empties them all
            part = Signal(name=f"holding_{name}")
            m.d.sync += part.eq(Cat(near).any() & ~flush)
            part_holding.append(part)
        holding = Cat(part_holding).any()
        # A frame has ended when its last word leaves the tile's output FIFOs
        # (counted where it leaves, not where the router writes it, so no fork
        # is on this path), or the line FIFO of a global output it drives.
        frame_out = Signal()
        m.d.comb += frame_out.eq(Cat([u.o.valid & u.o.ready & u.o.payload.eof for u in out_fifos] +
                                     [(self.global_driven & self.global_last).any()]).any())
        ended = Signal()
        with m.If(start | flush):
            m.d.sync += ended.eq(0)
        with m.Elif(frame_out):
            m.d.sync += ended.eq(1)

        # An operator's configuration only matters when a route feeds it.
        def feeds(*sinks):
            return Cat(select[self.sinks.index(n)] != ROUTE_NONE for n in sinks).any()
        conv_error = conv.error & feeds("convolver_in", "convolver_psum")
        alu_error = alu.error & feeds("alu_a", "alu_b")
        mapper_error = mapper.error & feeds("mapper_in")
        errors = [route_error, conv_error, alu_error, mapper_error]
        # A register: the grid's read multiplexer is far from the tile.
        # ``holding`` is two cycles older than ``ended``, which only delays
        # ``done``: the word whose leaving sets ``ended`` was held then.
        m.d.sync += [
            self.status.busy.eq(holding),
            self.status.done.eq(ended & ~holding),
            self.status.route_error.eq(route_error),
            self.status.convolver_error.eq(conv_error),
            self.status.alu_error.eq(alu_error),
            self.status.mapper_error.eq(mapper_error),
            self.status.error.eq(Cat(errors).any()),
        ]
