"""The grid: R x C tiles with neighbour links and global lines, on the configuration bus."""

from amaranth.hdl import Cat, Const, Module, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .cfgbus import ConfigBus, registered_requests
from .presets import GridConfig
from .regs import (CONFIG_ADDRESS, CONTROL, CONTROL_REG, GRID_START_REG, GRID_STATUS, GRID_TILE, NEIGHBOURS, OFFSET,
                   OPPOSITE, STATUS_REG, Unit, pack_bits, sample_layout)
from .stream import CREDIT_PUSHER_LATENCY, PUSHED_FIFO_LATENCY, PushedFIFO, replica, replicas
from .tile import STATUS_LAG, Tile

__all__ = ["Grid", "BUS_LAG", "LINE_DEPTH", "LINE_LATENCY", "PUSH_LATENCY"]

#: Cycles from a tile's router writing a word for a global output line to
#: the line's output: the tile's :class:`CreditPusher`, then the grid's
#: :class:`PushedFIFO`.
LINE_LATENCY = CREDIT_PUSHER_LATENCY + PUSHED_FIFO_LATENCY

#: Words of a global output line's FIFO: the fewest that keep full rate.
LINE_DEPTH = PushedFIFO.min_depth

#: Cycles from a word taken on a global input line to the tiles' sinks: the
#: line's register (a replica per tile).
PUSH_LATENCY = 1

#: Cycles from a configuration write on the grid's bus to the tile's input
#: (:meth:`Grid._tile_bus`): a register per tile.
BUS_LAG = 1


class Grid(wiring.Component):
    """``rows x columns`` tiles, neighbour links, ``globals_`` global lines each way.

    Tile ``(r, c)`` has index ``r * columns + c`` on the configuration bus.  A
    global input line moves a word only when every tile reading it has
    promised room for it (a registered credit), and pushes it into them a
    cycle later (``PUSH_LATENCY``).  A global output line carries the words
    of the tile whose router drives it; two tiles driving one line is
    reported in the grid status (``global_conflict``).  A write to
    ``GRID_START_REG + g`` of the grid (tile ``GRID_TILE``, unit CONTROL)
    starts every tile ``32 g + i`` whose bit ``i`` is set, in one bus write.

    Members
    -------
    bus : In(ConfigBus)
    global_in : In(stream.Signature(sample_layout(width))).array(globals_)
    global_out : Out(stream.Signature(sample_layout(width))).array(globals_)
    status : Out(GRID_STATUS)
    """

    def __init__(self, config):
        if not isinstance(config, GridConfig):
            raise TypeError(f"config must be a GridConfig, not {config!r}")
        self._config = config
        sample = stream.Signature(sample_layout(config.fmt.width))
        super().__init__({
            "bus": In(ConfigBus),
            "global_in": In(sample).array(config.globals_),
            "global_out": Out(sample).array(config.globals_),
            "status": Out(GRID_STATUS),
        })

    config = property(lambda self: self._config)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C, G = cfg.rows, cfg.columns, cfg.globals_
        tiles = {}
        for r in range(R):
            for c in range(C):
                tile = Tile(kernel=cfg.kernel, max_width=cfg.max_width, globals_=G, fifos=cfg.fifos,
                            fifo_depth=cfg.fifo_depth, input_depth=cfg.input_depth,
                            segments=cfg.segments, fmt=cfg.fmt,
                            neighbours=(r > 0, c < C - 1, r < R - 1, c > 0))
                m.submodules[f"tile_{r}_{c}"] = tiles[r, c] = tile
                self._tile_bus(m, tile, r * C + c, f"{r}_{c}")

        # Neighbour links; edges offer nothing and take nothing.
        for (r, c), tile in tiles.items():
            for d in NEIGHBOURS:
                dr, dc = OFFSET[d]
                other = tiles.get((r + dr, c + dc))
                if other is not None:
                    wiring.connect(m, getattr(other, f"{OPPOSITE[d]}_out"), getattr(tile, f"{d}_in"))
                else:
                    m.d.comb += getattr(tile, f"{d}_out").ready.eq(0)

        all_tiles = list(tiles.values())
        conflicts, pushing = self._global_lines(m, all_tiles)

        m.d.comb += [
            self.status.busy.eq(Cat(*(t.status.busy for t in all_tiles), *pushing).any()),
            self.status.global_conflict.eq(Cat(conflicts).any()),
            self.status.error.eq(Cat(t.status.error for t in all_tiles).any() |
                                 self.status.global_conflict),
        ]

        # Reads: tile STATUS registers and the grid status, through the input
        # register as the tiles take their writes (RESPONDER_READ_LATENCY).
        read = registered_requests(m, self.bus)
        with m.If(read.re):
            m.d.sync += self.bus.rdata.eq(0)
            with m.If(read.addr.tile == GRID_TILE):
                m.d.sync += self.bus.rdata.eq(self.status)
            for (r, c), t in tiles.items():
                with m.If((read.addr.tile == r * C + c) & (read.addr.unit == Unit.CONTROL) &
                          (read.addr.reg == STATUS_REG)):
                    m.d.sync += self.bus.rdata.eq(t.status)
        return m

    def _tile_bus(self, m, tile, index, name):
        """Tile ``index``'s configuration writes, decoded from the bus into
        registers of its own (:data:`BUS_LAG`), which the placer can put near
        the tile: the bus fans out across the die once, to these registers,
        and a decode reaches a tile's input register only from them.  A
        GRID_START_REG write with the tile's bit reaches it as CONTROL.start."""
        bus = self.bus
        by_mask = Signal(name=f"start_by_mask_{name}")
        m.d.comb += by_mask.eq((bus.addr.tile == GRID_TILE) & (bus.addr.unit == Unit.CONTROL) &
                               (bus.addr.reg == GRID_START_REG + index // 32) & bus.wdata[index % 32])
        we = replica(name=f"tile_we_{name}")
        addr = replica(CONFIG_ADDRESS, reset_less=True, name=f"tile_addr_{name}")
        wdata = replica(len(bus.wdata), reset_less=True, name=f"tile_wdata_{name}")
        with m.If(by_mask):
            m.d.sync += [addr.unit.eq(Unit.CONTROL), addr.reg.eq(CONTROL_REG), addr.tile.eq(index),
                         wdata.eq(pack_bits(CONTROL, {"start": 1}))]
        with m.Else():
            m.d.sync += [addr.eq(bus.addr), wdata.eq(bus.wdata)]
        m.d.sync += we.eq(bus.we & ((bus.addr.tile == index) | by_mask))
        m.d.comb += [tile.we.eq(we), tile.addr.eq(addr), tile.wdata.eq(wdata)]

    def _global_lines(self, m, all_tiles):
        """A global input's word is pushed into every tile reading it, on all of
        their credits; a global output takes the words of the tile driving it.
        Returns (per output line, whether two tiles drive it; per input line,
        whether a word is on its way to the tiles)."""
        G = self._config.globals_
        # Global inputs: a word moves on the credit of every tile reading the
        # line (registered in each tile) into the line's register, one replica
        # per tile (one register's net to the far tiles was a critical path),
        # and from there into every reader a cycle later: no combinational
        # path from one tile's FIFOs through the grid into another's.
        pushing = []
        for g in range(G):
            line = self.global_in[g]
            used = Cat(t.global_used[g] for t in all_tiles).any()
            ready = Cat(t.global_in[g].ready for t in all_tiles).all()
            m.d.comb += line.ready.eq(used & ready)
            # One copy per tile, and the last the grid's own.
            *tile_pushed, pushed = replicas(m, line.valid & line.ready, len(all_tiles) + 1, f"global_pushed_{g}")
            words = replicas(m, line.payload, len(all_tiles), f"global_word_{g}", line.payload.shape())
            for t, valid, word in zip(all_tiles, tile_pushed, words):
                m.d.comb += [t.global_in[g].valid.eq(valid), t.global_in[g].payload.eq(word)]
            # A pushed word is in a tile's sink on the next cycle, and in its
            # STATUS STATUS_LAG cycles after that: until then it is the grid's.
            recent = [pushed]
            for n in range(STATUS_LAG):
                recent.append(Signal(name=f"global_pushed_{g}_{n + 1}"))
                m.d.sync += recent[-1].eq(recent[-2])
            pushing.append(Cat(recent).any())

        # Global outputs: one FIFO per line, behind a register (the tiles are
        # far from it), written by the tile that drives it (the first one
        # driving it, should two: the choice is configuration, not the
        # words on offer), from that tile's pusher on the line's registered
        # credit; emptied when a tile driving it is flushed.
        conflicts = []
        for g in range(G):
            unit = PushedFIFO(sample_layout(self._config.fmt.width), LINE_DEPTH)
            flush = Signal(name="line_flush")
            m.d.comb += flush.eq(Cat(t.global_flush[g] for t in all_tiles).any())
            m.submodules[f"global_out_{g}"] = ResetInserter({"sync": flush})(unit)
            wiring.connect(m, unit.o, wiring.flipped(self.global_out[g]))
            drivers = Cat(t.global_driven[g] for t in all_tiles)
            writer = Signal(range(len(all_tiles) + 1), name=f"global_writer_{g}")
            m.d.comb += writer.eq(len(all_tiles))           # no driver: the padding, offering nothing
            for k in reversed(range(len(all_tiles))):
                with m.If(drivers[k]):
                    m.d.comb += writer.eq(k)
            ports = [t.global_out[g] for t in all_tiles]
            width = len(ports[0].payload.as_value())
            m.d.comb += [unit.i.valid.eq(Cat(*(p.valid for p in ports), 0).bit_select(writer, 1)),
                         unit.i.payload.eq(Cat(*(p.payload for p in ports), Const(0, width))
                                           .word_select(writer, width))]
            for t in all_tiles:
                m.d.comb += [t.global_out[g].ready.eq(unit.i.ready), t.global_held[g].eq(unit.level != 0),
                             t.global_last[g].eq(unit.o.valid & unit.o.ready & unit.o.payload.eof)]
            # Two or more drivers: clearing the lowest set bit leaves one set.
            conflicts.append((drivers & (drivers - 1)) != 0)
        return conflicts, pushing
