"""The reference engine: runs a compiled program exactly as the hardware must.

The control program runs on the instruction-set simulator (:mod:`sim.golden.iss`);
its configuration bus is :class:`GridModel`, a functional model of the grid
and the streamer that moves whole frames instead of words.  Every register
write lands in the tile's shadow copy and becomes active at ``start``;
streams follow the *active* routes (a source feeding several sinks copies
its frame to each); operators compute with :mod:`sim.golden.reference`, the
bit-exact numpy model the gateware is verified against.  The engine is
independent of the compiler's intentions: it executes the program, so the
memory it produces is what the hardware must produce.

Anything the hardware would flag or hang on (a frame whose size disagrees
with an operator's configuration, a stream nobody consumes when the program
waits for it, two writers on one global line) raises :class:`EngineError`
naming the instruction.
"""

import numpy as np

from neuflow_hdl.numerics import Format, unsigned_words, wrap_signed
from neuflow_hdl.regs import (ALU_CONFIG, CONTROL, CONTROL_REG, CONV_CONFIG, GRID_START_REG,
                              GRID_STATUS, GRID_TILE, NEIGHBOURS, OFFSET, OPPOSITE, PORT_START_REG,
                              PORT_STATUS, PORT_STATUS_REG, PORTS_START_REG, PORTS_STATUS,
                              PORTS_STATUS_REG, ROUTE_NONE, STATUS_REG, STREAM_PORT, STREAMER_TILE,
                              AluOp, ConvMode, PoolMode, Unit, config_address, decode_address,
                              mapper_config_layout, pack_bits, register_count, router_sinks,
                              router_sources, unpack_bits, unpack_registers)
from sim.golden import reference
from sim.golden.iss import ISS

__all__ = ["EngineError", "GridModel", "run_program"]

class EngineError(Exception):
    pass


class _Tile:
    def __init__(self, index, config):
        self.index = index
        self.shadow = {}
        self.active = {}
        K = config.kernel
        self.weights = np.zeros((K, K), dtype=np.int64)
        self.pointer = (K - 1, K - 1)
        # Preload bank: K rows of K words (see :meth:`take_preload`).
        self.bank = np.zeros((K, K), dtype=np.int64)
        self.kept, self.in_row, self.pending, self.skip_left = 0, 0, False, 0
        self.queues = {}        # sink name -> [frame]
        self.activated()

    def take_preload(self, words, size):
        """Words of a ``size`` x ``size`` kernel into the preload bank, as the
        gateware's KernelBank takes them: each enters the bottom row at its
        right end, the row moving left, and after every ``size`` words the
        rows move up first."""
        for word in words:
            if self.in_row == size:
                self.bank[:-1] = self.bank[1:].copy()
                self.in_row = 1
            else:
                self.in_row += 1
            self.bank[-1, :-1] = self.bank[-1, 1:].copy()
            self.bank[-1, -1] = word
        self.kept += len(words)
        self.pending |= len(words) > 0

    def activated(self):
        """Forget what was decoded from the active registers (a start replaced them)."""
        self.decoded = {}       # unit -> its active registers, decoded
        self.consumers = None   # source name -> [sinks routed to it], made when first needed


class GridModel:
    """Configuration bus of the ISS: tiles, routes, operators and streamer ports."""

    def __init__(self, config, memory):
        self.c = config
        self.memory = memory            # the ISS's memory (shared, unsigned words)
        self.fmt = Format(config.fmt.width, config.fmt.frac)
        self.tiles = [_Tile(t, config) for t in range(config.tiles)]
        self.sinks = router_sinks(config.globals_, config.fifos)
        self.sink_index = {name: k for k, name in enumerate(self.sinks)}
        self.sources = router_sources(config.globals_, config.fifos)
        self.ports = [{"regs": [0] * 6, "busy": False, "done": False, "error": False,
                       "desc": None} for _ in range(config.ports)]
        self.line_in = {g: [] for g in range(config.globals_)}     # frames waiting for a consumer
        self.line_out = {g: [] for g in range(config.globals_)}    # frames waiting for a writer
        self.where = "?"
        self.mapper_layout = mapper_config_layout(config.fmt.width, config.segments)

    # -- helpers --------------------------------------------------------------------
    def _fail(self, message):
        raise EngineError(f"{self.where}: {message}")

    def _unit(self, tile, unit, layout):
        """The active registers of ``unit``, decoded once per start:
        ``{field path: int}`` (:func:`~neuflow_hdl.regs.unpack_bits`)."""
        fields = tile.decoded.get(unit)
        if fields is None:
            words = [tile.active.get((unit.value, r), 0) for r in range(register_count(layout))]
            fields = tile.decoded[unit] = unpack_bits(layout, unpack_registers(words))
        return fields

    def _member(self, kind, value, what):
        """The member of the enum ``kind`` that ``value`` codes (a fault if none)."""
        try:
            return kind(value)
        except ValueError:
            self._fail(f"{what} {value} does not exist")

    def _route(self, tile, sink):
        select = tile.active.get((Unit.ROUTER.value, self.sink_index[sink]), ROUTE_NONE)
        if select == ROUTE_NONE:
            return None
        if select >= len(self.sources):
            self._fail(f"tile {tile.index}: sink {sink} selects source {select}, which does not "
                       "exist (route error)")
        return self.sources[select]

    def _neighbour(self, index, direction):
        r, c = divmod(index, self.c.columns)
        dr, dc = OFFSET[direction]
        r, c = r + dr, c + dc
        if not (0 <= r < self.c.rows and 0 <= c < self.c.columns):
            return None
        return r * self.c.columns + c

    def _words(self, base, width, height, stride):
        rows = [self.memory[base + y * stride: base + y * stride + width] for y in range(height)]
        frame = np.array(rows, dtype=np.int64).reshape(height, width)
        return wrap_signed(frame, self.fmt.width)

    # -- bus --------------------------------------------------------------------------
    def write(self, address, value):
        tile, unit, reg = decode_address(address)
        if tile == STREAMER_TILE:
            if unit >= len(self.ports):
                self._fail(f"write to streamer port {unit}, which does not exist")
            port = self.ports[unit]
            if reg < 6:
                port["regs"][reg] = value
            elif reg == PORT_START_REG:
                self._start_port(unit)
            elif reg == PORTS_START_REG and unit == 0:
                for n in range(len(self.ports)):
                    if value >> n & 1:
                        self._start_port(n)
            return
        group = reg - GRID_START_REG
        if tile == GRID_TILE and unit == Unit.CONTROL.value and 0 <= group < 8:
            for i in range(32):
                if value >> i & 1 and 32 * group + i < len(self.tiles):
                    self.write(config_address(32 * group + i, Unit.CONTROL, CONTROL_REG),
                               pack_bits(CONTROL, {"start": 1}))
            return
        if tile >= len(self.tiles):
            self._fail(f"write to tile {tile}, which does not exist")
        t = self.tiles[tile]
        if unit == Unit.CONTROL.value and reg == 0:
            if value & 2:                       # flush
                t.queues = {}
            if value & 1:                       # start
                t.active = dict(t.shadow)
                t.activated()
                conv = self._unit(t, Unit.CONVOLVER, CONV_CONFIG)
                corner = self.c.kernel - conv['k'] if 1 <= conv['k'] <= self.c.kernel else 0
                t.pointer = (corner, corner)
                if t.pending:           # the preload bank becomes the kernel
                    t.weights = t.bank.copy()
                t.weights[:corner, :] = 0           # outside the k x k corner (none if k is invalid)
                t.weights[:, :corner] = 0
                t.kept, t.in_row, t.pending, t.skip_left = 0, 0, False, conv['weight_skip']
                self._propagate()
            return
        t.shadow[(unit, reg)] = value

    def read(self, address):
        tile, unit, reg = decode_address(address)
        if tile == STREAMER_TILE and reg == PORT_STATUS_REG and unit < len(self.ports):
            return pack_bits(PORT_STATUS, {k: int(self.ports[unit][k]) for k in ("busy", "done", "error")})
        if tile == STREAMER_TILE and reg == PORTS_STATUS_REG and unit == 0:
            return pack_bits(PORTS_STATUS, {"busy": int(any(p["busy"] for p in self.ports)),
                                            "error": int(any(p["error"] for p in self.ports))})
        if tile == GRID_TILE:
            busy = any(any(q for q in t.queues.values()) for t in self.tiles)
            return pack_bits(GRID_STATUS, {"busy": int(busy)})
        if tile < len(self.tiles) and unit == Unit.CONTROL.value and reg == STATUS_REG:
            t = self.tiles[tile]
            return int(any(q for q in t.queues.values()))
        return 0

    # -- streams ----------------------------------------------------------------------
    def _start_port(self, n):
        regs = self.ports[n]["regs"]
        d = unpack_bits(STREAM_PORT, unpack_registers(regs))
        port = self.ports[n]
        last = d['base'] + (d['height'] - 1) * d['stride'] + d['width'] - 1
        if d['width'] == 0 or d['height'] == 0 or d['base'] < d['window_base'] or \
                last >= d['window_base'] + d['window_size'] or last >= len(self.memory):
            port.update(busy=False, done=False, error=True)
            self._fail(f"port {n}: rectangle base {d['base']:#x} {d['width']}x{d['height']} stride "
                       f"{d['stride']} leaves its window")
        if d['line'] >= self.c.globals_:
            self._fail(f"port {n}: global line {d['line']} does not exist")
        port.update(busy=True, done=False, error=False, desc=d)
        if d['write']:
            self._try_writers()
        else:
            self.line_in[d['line']].append((n, self._words(d['base'], d['width'], d['height'], d['stride'])))
            self._propagate()

    def _try_writers(self):
        for n, port in enumerate(self.ports):
            d = port["desc"]
            if not port["busy"] or d is None or not d['write'] or not self.line_out[d['line']]:
                continue
            frame = self.line_out[d['line']].pop(0)
            if frame.shape != (d['height'], d['width']):
                port.update(busy=False, error=True)
                self._fail(f"port {n} writes a {d['width']}x{d['height']} rectangle but line {d['line']} "
                           f"carries a {frame.shape[1]}x{frame.shape[0]} frame")
            for y in range(d['height']):
                start = d['base'] + y * d['stride']
                self.memory[start:start + d['width']] = unsigned_words(frame[y], self.fmt.width)
            port.update(busy=False, done=True)

    def _consumers(self, tile, source):
        if tile.consumers is None:
            routes = {}
            for sink in self.sinks:
                routes.setdefault(self._route(tile, sink), []).append(sink)
            tile.consumers = routes
        return [(tile, sink) for sink in tile.consumers.get(source, ())]

    def _deliver(self, tile, source, frame):
        """Send ``frame`` from ``source`` of ``tile`` to every sink routed to it.
        Returns False if nothing consumes it."""
        targets = self._consumers(tile, source)
        if not targets:
            return False
        for t, sink in targets:
            if sink.endswith("_out") and sink.split("_")[0] in NEIGHBOURS:
                direction = sink.split("_")[0]
                other = self._neighbour(t.index, direction)
                if other is None:
                    self._fail(f"tile {t.index}: {sink} leads off the grid (route error)")
                if not self._deliver(self.tiles[other], f"{OPPOSITE[direction]}_in", frame):
                    self._fail(f"tile {other}: the frame from tile {t.index} ({sink}) has no "
                               "consumer")
            elif sink.startswith("global_out_"):
                g = int(sink.rsplit("_", 1)[1])
                drivers = [u.index for u in self.tiles if self._route(u, sink) is not None]
                if len(drivers) > 1:
                    self._fail(f"global output line {g} is driven by tiles {drivers}")
                self.line_out[g].append(frame)
            else:
                t.queues.setdefault(sink, []).append(frame)
        return True

    def _propagate(self):
        progress = True
        while progress:
            progress = False
            for g in range(self.c.globals_):
                while self.line_in[g]:
                    port, frame = self.line_in[g][0]
                    delivered = False
                    for t in self.tiles:
                        delivered |= self._deliver(t, f"global_in_{g}", frame)
                    if not delivered:
                        break
                    self.line_in[g].pop(0)
                    self.ports[port].update(busy=False, done=True)
                    progress = True
            for t in self.tiles:
                progress |= self._fire(t)
            self._try_writers()

    def _take(self, t, sink):
        q = t.queues.get(sink)
        return q.pop(0) if q else None

    def _fire(self, t):
        fired = False
        K = self.c.kernel
        fmt = self.fmt
        weights = t.queues.pop("convolver_weights", [])
        for frame in weights:
            conv = self._unit(t, Unit.CONVOLVER, CONV_CONFIG)
            if conv['preload']:
                words = frame.ravel()
                skipped = min(t.skip_left, len(words))
                t.skip_left -= skipped
                size = conv['preload_k'] if 1 <= conv['preload_k'] <= K else K
                t.take_preload(words[skipped:skipped + size * size - t.kept], size)
                fired = True
                continue
            for word in frame.ravel():
                r, c = t.pointer
                t.weights[r, c] = word
                conv = self._unit(t, Unit.CONVOLVER, CONV_CONFIG)
                corner = K - conv['k']
                if c >= K - 1:
                    t.pointer = (corner if r >= K - 1 else r + 1, corner)
                else:
                    t.pointer = (r, c + 1)
            fired = True
        q = t.queues
        if q.get("convolver_in"):
            conv = self._unit(t, Unit.CONVOLVER, CONV_CONFIG)
            mode = self._member(ConvMode, conv['mode'], f"tile {t.index}: convolver mode")
            if mode != ConvMode.MAC_PSUM or q.get("convolver_psum"):
                x = self._take(t, "convolver_in")
                if x.shape != (conv['height'], conv['width']):
                    self._fail(f"tile {t.index}: convolver configured for {conv['width']}x"
                               f"{conv['height']} receives a {x.shape[1]}x{x.shape[0]} frame")
                if not (1 <= conv['k'] <= K and conv['stride'] >= 1):
                    self._fail(f"tile {t.index}: convolver k={conv['k']} stride={conv['stride']} invalid")
                if mode == ConvMode.MAX:
                    y = reference.window_max(x, conv['k'], stride=conv['stride'], fmt=fmt)
                else:
                    psum = self._take(t, "convolver_psum") if mode == ConvMode.MAC_PSUM else None
                    kernel = t.weights[K - conv['k']:, K - conv['k']:]
                    y = reference.conv2d(x, kernel, stride=conv['stride'], bias=conv['bias'], psum=psum,
                                         shift=conv['shift'], fmt=fmt)
                self._emit(t, "convolver", y)
                fired = True
        if q.get("alu_a"):
            alu = self._unit(t, Unit.ALU, ALU_CONFIG)
            op = self._member(AluOp, alu['op'], f"tile {t.index}: ALU operation")
            if alu['b_const'] or q.get("alu_b") or op in (AluOp.SQUARE, AluOp.ABS):
                a = self._take(t, "alu_a")
                if alu['b_const'] or op in (AluOp.SQUARE, AluOp.ABS):
                    b = int(wrap_signed(alu['const'], fmt.width))
                else:
                    b = self._take(t, "alu_b")
                    if b.shape != a.shape:
                        self._fail(f"tile {t.index}: ALU operands of shapes {a.shape} and {b.shape}")
                self._emit(t, "alu", reference.alu(op, a, b, shift=alu['shift'], fmt=fmt))
                fired = True
        if q.get("mapper_in"):
            m = self._unit(t, Unit.MAPPER, self.mapper_layout)
            x = self._take(t, "mapper_in")
            field = lambda name: wrap_signed([m[f"segments.{i}.{name}"] for i in range(self.c.segments)],
                                             fmt.width)
            y = reference.mapper(x, field("bound"), field("slope"), field("offset"),
                                 symmetry=m['symmetry'], shift=m['shift'], fmt=fmt)
            self._emit(t, "mapper", self._pool(t, m, y))
            fired = True
        for n in range(self.c.fifos):
            frame = self._take(t, f"fifo_{n}_in")
            if frame is not None:
                self._emit(t, f"fifo_{n}", frame)
                fired = True
        return fired

    def _pool(self, t, m, y):
        """The mapper's pool stage on the mapped frame ``y`` (configuration ``m``)."""
        mode = self._member(PoolMode, m['pool.mode'], f"tile {t.index}: pool mode")
        if mode == PoolMode.NONE:
            return y
        if y.shape != (m['pool.height'], m['pool.width']):
            self._fail(f"tile {t.index}: pool stage configured for {m['pool.width']}x"
                       f"{m['pool.height']} receives a {y.shape[1]}x{y.shape[0]} frame")
        if min(y.shape) < 2 or y.shape[1] > self.c.max_width:
            self._fail(f"tile {t.index}: the pool stage cannot take a {y.shape[1]}x{y.shape[0]} frame")
        return reference.pool(y, mode, shift=m['pool.shift'], fmt=self.fmt)

    def _emit(self, t, source, frame):
        if not self._deliver(t, source, frame):
            self._fail(f"tile {t.index}: the {source} output has no consumer")


def run_program(memory, config, *, max_steps=50_000_000, snapshots=None, reached=None):
    """Run the program in ``memory`` (unsigned words) to halt on the ISS with the
    grid model; returns ``(memory after halt, halt code, instructions)``.

    ``snapshots``: a dict whose keys are instruction indices; each key's value
    becomes a copy of the memory when that instruction is first reached (and
    ``reached(index, copy)`` is called then, if given)."""
    iss = ISS(memory, width=config.fmt.width, wait_limit=1)
    model = GridModel(config, iss.memory)
    iss.config = model
    steps = 0
    wanted = set(snapshots or ())
    while not iss.halted:
        if iss.pc in wanted:
            snapshots[iss.pc] = iss.memory.copy()
            wanted.discard(iss.pc)
            if reached is not None:
                reached(iss.pc, snapshots[iss.pc])
        model.where = f"instruction {iss.pc}"
        try:
            iss.step()
        except RuntimeError as exc:
            raise EngineError(f"instruction {iss.pc}: the program waits for a condition that can "
                              f"never hold ({exc})") from None
        steps += 1
        if steps > max_steps:
            raise EngineError(f"the program did not halt within {max_steps} instructions")
    return iss.memory, iss.halt_code, iss.steps
