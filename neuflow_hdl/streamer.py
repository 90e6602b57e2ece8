"""The streamer: NeuFlow's multi-port "smart DMA" between memory and the grid."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .cfgbus import ConfigBus, registered_requests
from .membus import memory_bus
from .numerics import Q8_8
from .regs import (PORT_START_REG, PORT_STATUS, PORT_STATUS_REG, PORTS_START_REG, PORTS_STATUS,
                   PORTS_STATUS_REG, STREAM_PORT, STREAMER_TILE, hdl_register_enables, hdl_write_registers,
                   sample_layout)

__all__ = ["BusArbiter", "StreamPort", "Streamer", "reads_as_one_run"]


class BusArbiter(wiring.Component):
    """Round-robin arbiter of ``count`` initiators onto one memory bus.

    Commands are granted fairly (the last winner has the lowest priority next);
    read responses return in command order to the initiator that asked, by a
    FIFO of initiator numbers, so initiators must be able to take every
    response they asked for (the streamer ports reserve room before asking).
    """

    def __init__(self, count, *, addr_width, beat_words, width=16, outstanding=16):
        self._count, self._outstanding = count, outstanding
        bus = memory_bus(addr_width=addr_width, beat_words=beat_words, width=width)
        super().__init__({
            "initiator": In(bus).array(count),
            "memory": Out(bus),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._count
        m.submodules.order = order = fifo.SyncFIFO(width=max((n - 1).bit_length(), 1),
                                                   depth=self._outstanding)
        last = Signal(range(n))
        grant = Signal(range(n))
        any_valid = Signal()
        valid = Cat(i.cmd.valid for i in self.initiator)
        m.d.comb += any_valid.eq(valid.any())
        # Priority starts after the last winner.
        with m.Switch(last):
            for r in range(n):
                with m.Case(r):
                    for k in reversed([(r + 1 + j) % n for j in range(n)]):
                        with m.If(valid[k]):
                            m.d.comb += grant.eq(k)
        chosen = Array(i.cmd for i in self.initiator)[grant]
        room = order.w_rdy
        m.d.comb += [
            self.memory.cmd.valid.eq(any_valid & room),
            self.memory.cmd.payload.eq(chosen.payload),
        ]
        for k, initiator in enumerate(self.initiator):
            m.d.comb += initiator.cmd.ready.eq((grant == k) & room & self.memory.cmd.ready)
        moved = self.memory.cmd.valid & self.memory.cmd.ready
        with m.If(moved):
            m.d.sync += last.eq(grant)
        m.d.comb += [order.w_data.eq(grant), order.w_en.eq(moved & ~chosen.payload.we)]
        # Responses to whoever asked first.
        for k, initiator in enumerate(self.initiator):
            mine = order.r_rdy & (order.r_data == k)
            m.d.comb += [initiator.resp.valid.eq(mine & self.memory.resp.valid),
                         initiator.resp.payload.eq(self.memory.resp.payload)]
        asker = Array(i.resp.ready for i in self.initiator)[order.r_data]
        m.d.comb += [self.memory.resp.ready.eq(order.r_rdy & asker),
                     order.r_en.eq(self.memory.resp.valid & self.memory.resp.ready)]
        return m


def _product_in_logic(a, b):
    """``a * b`` as shifted partial products added up: logic, not a multiplier
    block.  (The ECP5-85F's 156 multipliers are the grid's: 153 of them; a
    port's window check would take two more.)  Its size grows with both
    widths: keep them to what the check needs (:meth:`StreamPort._start`)."""
    a = a.as_unsigned()
    total = Const(0, 1)
    for bit in range(len(a)):
        total = total + Mux(a[bit], b << bit, 0)
    return total


def reads_as_one_run(width, height, stride):
    """Whether a port reads a rectangle as one run of words (its rows follow
    each other: ``stride == width``, or one row); of numbers or of signals."""
    return (stride == width) | (height == 1)


class StreamPort(wiring.Component):
    """One streamer port: a 2-D rectangle of memory to a stream, or back.

    ``start`` latches ``desc``.  The rectangle's first and last word must lie
    inside the descriptor's window and inside memory; otherwise ``error`` is
    set and the port touches nothing.  A reader issues one read per beat that
    holds words of the rectangle, never more than ``buffer_beats`` ahead of
    what its output has taken, and emits one word per cycle with ``eol``/``eof``
    flags.  A writer packs consecutive words of a row into one masked beat
    write; it checks incoming flags against the geometry (``error`` on a
    mismatch; the words are still written).
    """

    def __init__(self, *, memory_words, beat_words, fmt=Q8_8, buffer_beats=4):
        self._memory_words, self._beat_words = memory_words, beat_words
        self._fmt, self._buffer = fmt, buffer_beats
        self._addr_width = max((memory_words // beat_words - 1).bit_length(), 1)
        self._word_bits = max((memory_words - 1).bit_length(), 1)    # a word address in memory
        sample = stream.Signature(sample_layout(fmt.width))
        super().__init__({
            "desc": In(STREAM_PORT),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "active_write": Out(1),
            "active_line": Out(4),
            "bus": Out(memory_bus(addr_width=self._addr_width, beat_words=beat_words,
                                  width=fmt.width)),
            "o": Out(sample),
            "i": In(sample),
        })

    def elaborate(self, platform):
        m = Module()
        port = self._start(m)
        issue = self._reader(m, port)
        out_valid, out = self._writer(m, port)
        m.d.comb += self.bus.cmd.valid.eq(issue | (port.writing & out_valid))
        with m.If(port.writing):
            m.d.comb += [self.bus.cmd.payload.addr.eq(out.addr), self.bus.cmd.payload.we.eq(1),
                         self.bus.cmd.payload.wdata.eq(out.data),
                         self.bus.cmd.payload.wmask.eq(out.mask)]
        return m

    def _start(self, m):
        """``start`` latches the descriptor and checks its window; the state the
        reader and writer share (a :class:`_PortState`)."""
        d = Signal(STREAM_PORT)
        m.d.comb += [self.active_write.eq(d.write), self.active_line.eq(d.line)]
        # The last word's address.  A stride of 2**word_bits or more leaves
        # memory at the second row, so the product takes the stride's low
        # word_bits bits only (a 16 x 17-bit product on a board of 2**17
        # words instead of 16 x 32: 4 ports' window checks were 8,000 LUTs).
        d_in = self.desc
        wide_stride = Signal()
        last_word = Signal(64)
        m.d.comb += [
            wide_stride.eq((d_in.stride >> self._word_bits).any() & (d_in.height > 1)),
            last_word.eq(d_in.base + _product_in_logic(d_in.height - 1, d_in.stride[:self._word_bits]) +
                         d_in.width - 1),
        ]
        inside = Signal()
        m.d.comb += inside.eq((d_in.width != 0) & (d_in.height != 0) & ~wide_stride &
                              (d_in.base >= d_in.window_base) &
                              (last_word < d_in.window_base + d_in.window_size) &
                              (last_word < self._memory_words))
        reading = Signal()
        writing = Signal()
        flag_error = Signal()
        m.d.comb += self.busy.eq(reading | writing)

        row = Signal(16)
        row_addr = Signal(32)
        col = Signal(16)
        with m.If(self.start):
            m.d.sync += [d.eq(self.desc), row.eq(0), row_addr.eq(self.desc.base), col.eq(0),
                         self.done.eq(0), flag_error.eq(0)]
            with m.If(inside):
                m.d.sync += [reading.eq(~self.desc.write), writing.eq(self.desc.write),
                             self.error.eq(0)]
            with m.Else():
                m.d.sync += [reading.eq(0), writing.eq(0), self.error.eq(1)]
        return _PortState(d, inside, reading, writing, flag_error, row, row_addr, col,
                          last_row=row == d.height - 1, last_word=last_word)

    def _reader(self, m, port):
        """Memory to stream: one read per beat of the rectangle, at most
        ``buffer_beats`` ahead of the output; one word out per cycle.  A
        contiguous rectangle (``stride == width``, or one row) is read as one
        run of words, so rows that share a beat cost it once; the flags count
        the words out.  Returns the read request (``issue``)."""
        B, W = self._beat_words, self._fmt.width
        s = B.bit_length() - 1
        d, row, row_addr, last_row, reading = port.d, port.row, port.row_addr, port.last_row, port.reading
        inside = port.inside
        meta_layout = data.StructLayout({"first": range(B), "last": range(B)})
        m.submodules.beats = beats = fifo.SyncFIFOBuffered(width=B * W, depth=self._buffer)
        m.submodules.meta = meta = fifo.SyncFIFOBuffered(width=meta_layout.size, depth=self._buffer)
        issuing = Signal()
        beat = Signal(32)
        credits = Signal(range(self._buffer + 1))      # beats asked for and not yet emitted
        # The run being read: a row, or the whole of a contiguous rectangle.
        contiguous = Signal()
        run_end = Signal(32)                # its last word, for a contiguous rectangle
        with m.If(self.start):
            m.d.sync += [contiguous.eq(reads_as_one_run(self.desc.width, self.desc.height, self.desc.stride)),
                         run_end.eq(port.last_word)]
        row_end = Signal(32)
        m.d.comb += row_end.eq(Mux(contiguous, run_end, row_addr + d.width - 1))
        end_beat = row_end >> s
        with m.If(self.start):
            m.d.sync += [issuing.eq(inside & ~self.desc.write), beat.eq(self.desc.base >> s)]
        issue = Signal()
        m.d.comb += [
            issue.eq(reading & issuing & (credits < self._buffer)),
            self.bus.cmd.payload.addr.eq(beat),          # the writer overrides it below
        ]
        new_meta = Signal(meta_layout)
        m.d.comb += [
            new_meta.first.eq(Mux(beat == (row_addr >> s), row_addr[:s] if s else 0, 0)),
            new_meta.last.eq(Mux(beat == end_beat, row_end[:s] if s else 0, B - 1)),
            meta.w_data.eq(new_meta),
        ]
        asked = Signal()
        emitted = Signal()
        m.d.comb += asked.eq(issue & self.bus.cmd.ready)
        m.d.sync += credits.eq(credits + asked - emitted)
        with m.If(asked):
            with m.If(beat == end_beat):
                m.d.sync += [row.eq(row + 1), row_addr.eq(row_addr + d.stride),
                             beat.eq((row_addr + d.stride) >> s)]
                with m.If(last_row | contiguous):
                    m.d.sync += issuing.eq(0)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        m.d.comb += [meta.w_en.eq(asked),
                     beats.w_data.eq(self.bus.resp.payload), beats.w_en.eq(self.bus.resp.valid),
                     self.bus.resp.ready.eq(1)]      # room was reserved by the credit
        # Words out of the head beat, one per cycle; the flags from the words
        # counted out (registers saying whether the next word ends a row, and
        # whether its row is the last).
        head = Signal(meta_layout)
        m.d.comb += head.eq(meta.r_data)
        pos = Signal(range(B))
        in_beat = Signal()
        at = Mux(in_beat, pos, head.first)
        words = Array(beats.r_data[n * W:(n + 1) * W] for n in range(B))
        have = beats.r_rdy & meta.r_rdy & reading
        out_col = Signal(16)
        out_row = Signal(16)
        ends_row = Signal()
        in_last_row = Signal()
        with m.If(self.start):
            m.d.sync += [out_col.eq(0), out_row.eq(0), ends_row.eq(self.desc.width == 1),
                         in_last_row.eq(self.desc.height == 1)]
        m.d.comb += [
            self.o.valid.eq(have),
            self.o.payload.data.eq(words[at]),
            self.o.payload.eol.eq(ends_row),
            self.o.payload.eof.eq(ends_row & in_last_row),
        ]
        taken = self.o.valid & self.o.ready
        with m.If(taken):
            with m.If(ends_row):
                m.d.sync += [out_col.eq(0), out_row.eq(out_row + 1), ends_row.eq(d.width == 1),
                             in_last_row.eq(out_row + 2 == d.height)]
                with m.If(in_last_row):
                    m.d.sync += [reading.eq(0), self.done.eq(1)]
            with m.Else():
                m.d.sync += [out_col.eq(out_col + 1), ends_row.eq(out_col + 2 == d.width)]
            with m.If(at == head.last):
                m.d.comb += [beats.r_en.eq(1), meta.r_en.eq(1), emitted.eq(1)]
                m.d.sync += in_beat.eq(0)
            with m.Else():
                m.d.sync += [pos.eq(at + 1), in_beat.eq(1)]
        return issue

    def _writer(self, m, port):
        """Stream to memory: consecutive words of a row packed into one masked
        beat; the flags checked against the geometry (``error`` on a mismatch).
        Returns the beat waiting for the bus: (valid, its address, data and mask)."""
        B, W = self._beat_words, self._fmt.width
        s = B.bit_length() - 1
        d, row, row_addr, col, last_row = port.d, port.row, port.row_addr, port.col, port.last_row
        writing, flag_error = port.writing, port.flag_error
        pack_data = Signal(B * W)
        pack_mask = Signal(B)
        out_valid = Signal()
        out = Signal(data.StructLayout({"addr": 32, "data": B * W, "mask": B}))
        address = Signal(32)
        m.d.comb += address.eq(row_addr + col)
        offset = address[:s] if s else Const(0)
        row_done = col == d.width - 1
        complete = (offset == B - 1) | row_done
        word_bits = (self.i.payload.data.as_unsigned() << (offset * W))[:B * W]
        # A word that completes a beat needs the beat register free (or leaving
        # now); the others only pack, so a beat waiting for the bus stalls the
        # stream only when the next beat is complete too.
        m.d.comb += self.i.ready.eq(writing & ~self.start & (~out_valid | self.bus.cmd.ready | ~complete))
        accepted = self.i.valid & self.i.ready
        sent = out_valid & self.bus.cmd.ready & writing
        with m.If(sent):
            m.d.sync += out_valid.eq(0)
        finishing = Signal()
        with m.If(accepted):
            with m.If((self.i.payload.eol != row_done) |
                      (self.i.payload.eof != (row_done & last_row))):
                m.d.sync += flag_error.eq(1)
            with m.If(complete):
                m.d.sync += [out_valid.eq(1), out.addr.eq(address >> s),
                             out.data.eq(pack_data | word_bits),
                             out.mask.eq(pack_mask | (Const(1, B) << offset)),
                             pack_data.eq(0), pack_mask.eq(0)]
            with m.Else():
                m.d.sync += [pack_data.eq(pack_data | word_bits),
                             pack_mask.eq(pack_mask | (Const(1, B) << offset))]
            with m.If(row_done):
                m.d.sync += [col.eq(0), row.eq(row + 1), row_addr.eq(row_addr + d.stride)]
                with m.If(last_row):
                    m.d.sync += finishing.eq(1)
            with m.Else():
                m.d.sync += col.eq(col + 1)
        with m.If(finishing & ~out_valid & writing):
            m.d.sync += [writing.eq(0), finishing.eq(0), self.done.eq(1)]
        with m.If(self.start):
            m.d.sync += [finishing.eq(0), out_valid.eq(0), pack_mask.eq(0), pack_data.eq(0)]
        with m.If(flag_error):
            m.d.sync += self.error.eq(1)
        return out_valid, out


class _PortState:
    """Signals a :class:`StreamPort`'s start, reader and writer share."""

    def __init__(self, d, inside, reading, writing, flag_error, row, row_addr, col, last_row, last_word):
        self.d, self.inside, self.reading, self.writing = d, inside, reading, writing
        self.flag_error, self.row, self.row_addr, self.col = flag_error, row, row_addr, col
        self.last_row = last_row
        self.last_word = last_word      #: the descriptor's last word (from ``desc``, before ``start``)


class Streamer(wiring.Component):
    """``ports`` StreamPorts behind the configuration bus, bound to global lines.

    Port ``p`` answers configuration addresses of tile ``STREAMER_TILE``, unit
    ``p``: registers 0 .. 5 hold its descriptor (``STREAM_PORT``), a write to
    ``PORT_START_REG`` starts it, ``PORT_STATUS_REG`` reads ``PORT_STATUS``;
    a write to ``PORTS_START_REG`` of unit 0 starts every port whose bit is set,
    and ``PORTS_STATUS_REG`` of unit 0 reads ``PORTS_STATUS`` (any port busy,
    any in error: one poll waits for a whole pass's transfers).
    A reader drives grid global input ``line``; a writer takes grid global
    output ``line``.  Each port is one initiator of the memory bus (see
    :class:`BusArbiter`).
    """

    def __init__(self, *, ports, globals_, memory_words, beat_words, fmt=Q8_8, buffer_beats=4):
        self._ports, self._globals = ports, globals_
        self._kw = dict(memory_words=memory_words, beat_words=beat_words, fmt=fmt,
                        buffer_beats=buffer_beats)
        addr_width = max((memory_words // beat_words - 1).bit_length(), 1)
        sample = stream.Signature(sample_layout(fmt.width))
        bus = memory_bus(addr_width=addr_width, beat_words=beat_words, width=fmt.width)
        super().__init__({
            "cfg": In(ConfigBus),
            "bus": Out(bus).array(ports),
            "to_grid": Out(sample).array(globals_),
            "from_grid": In(sample).array(globals_),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        ports = []
        cfg = registered_requests(m, self.cfg)     # the input register (see cfgbus)
        port_of = cfg.addr.unit.as_value()          # the unit field names the port
        mine = cfg.addr.tile == STREAMER_TILE
        unit0 = mine & (port_of == 0)               # the all-ports registers
        for p in range(self._ports):
            port = StreamPort(**self._kw)
            m.submodules[f"port_{p}"] = port
            ports.append(port)
            wiring.connect(m, port.bus, wiring.flipped(self.bus[p]))
            selected = mine & (port_of == p)
            bits = Signal(STREAM_PORT, name=f"desc_{p}")
            hdl_write_registers(m, bits, hdl_register_enables(cfg.we & selected, cfg.addr.reg, STREAM_PORT),
                                cfg.wdata)
            by_mask = unit0 & (cfg.addr.reg == PORTS_START_REG) & cfg.wdata[p]
            m.d.comb += [port.desc.eq(bits),
                         port.start.eq(cfg.we & ((selected & (cfg.addr.reg == PORT_START_REG)) |
                                                 by_mask))]
        with m.If(cfg.re):
            m.d.sync += self.cfg.rdata.eq(0)
            for p, port in enumerate(ports):
                status = Signal(PORT_STATUS, name=f"status_{p}")
                m.d.comb += [status.busy.eq(port.busy), status.done.eq(port.done),
                             status.error.eq(port.error)]
                with m.If(mine & (port_of == p) & (cfg.addr.reg == PORT_STATUS_REG)):
                    m.d.sync += self.cfg.rdata.eq(status)
            every = Signal(PORTS_STATUS)
            m.d.comb += [every.busy.eq(self.busy), every.error.eq(Cat(p.error for p in ports).any())]
            with m.If(unit0 & (cfg.addr.reg == PORTS_STATUS_REG)):
                m.d.sync += self.cfg.rdata.eq(every)
        # Bind ports to global lines: per line, the first busy port in the
        # right direction owns it; only the owner sees the handshake.
        o_ready = [Const(0, 1)] * len(ports)
        for g in range(self._globals):
            out, inp = self.to_grid[g], self.from_grid[g]
            reader_taken = writer_taken = Const(0, 1)
            for n, port in enumerate(ports):
                here = port.busy & (port.active_line == g)
                reads = Signal(name=f"port_{n}_reads_{g}")
                writes = Signal(name=f"port_{n}_writes_{g}")
                m.d.comb += [reads.eq(here & ~port.active_write & ~reader_taken),
                             writes.eq(here & port.active_write & ~writer_taken)]
                with m.If(reads):
                    m.d.comb += [out.valid.eq(port.o.valid), out.payload.eq(port.o.payload)]
                with m.If(writes):
                    m.d.comb += [port.i.valid.eq(inp.valid), port.i.payload.eq(inp.payload),
                                 inp.ready.eq(port.i.ready)]
                o_ready[n] = o_ready[n] | (reads & out.ready)
                reader_taken = reader_taken | reads
                writer_taken = writer_taken | writes
        for n, port in enumerate(ports):
            m.d.comb += port.o.ready.eq(o_ready[n])
        m.d.comb += self.busy.eq(Cat(port.busy for port in ports).any())
        return m
