"""Code generation: passes -> control-CPU assembly.

The generator keeps a model of every shadow register it has written (tiles
and streamer ports) and writes only what changes, so a pass that differs
from the previous one in a kernel and a base address costs a handful of
instructions.

A layer's passes are pipelined: while pass ``n`` streams, the control CPU
writes the shadow registers and port descriptors of pass ``n+1`` (a port
latches its descriptor at start) and the convolvers preload its kernels.
One pass:

1. *Wait* for pass ``n-1``'s ports (and, when kernels were preloaded, for the
   grid to be idle, so every weight word has left the tiles' FIFOs).
2. *Start*, with one grid write per 32 tiles, every tile whose shadow
   registers changed, that preloaded a kernel (``start`` makes it the kernel
   in use) or that preloads during this pass.
3. *Streams*, started with one write: the write ports, the reads, and the
   *weight frame* of pass ``n+1`` on the last global line (which data never
   uses): the kernels it needs, each its own k x k words and each distinct
   kernel once; every tile that takes one routes the line to
   ``convolver_weights`` with ``preload`` set, ``weight_skip`` at its
   kernel's slot and ``preload_k`` its size.  A tile that already holds its kernel takes none.  When
   the data streams use every port, the frame streams first, on its own (the
   schedule keeps a port free unless the layer has a single kernel, as
   pooling does).
4. *Shadow writes* and port descriptors of pass ``n+1`` (tiles outside it get
   no routes, so they cannot swallow a stream), overlapping the streams.

A layer's first kernels are preloaded before its first pass with no data
streaming.  Once a layer is emitted, runs of its passes become loops over
configuration tables (:meth:`CodeGen._roll`, :mod:`compiler.rolling`).  Each layer starts with a cycle stamp (``cycles`` stored in the
stamp table) and ends with a check of the grid and port status: an error
halts with code ``0x100 + layer``.

:meth:`CodeGen.emit_layer` returns the :class:`~compiler.cost.PassCost` of
every pass it emitted; :meth:`CodeGen.fork` makes a trial generator (the same
register model, its own lines and weight frames) that the blocking search
emits candidates into and :meth:`CodeGen.adopt` keeps.
"""

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from neuflow_hdl.isa import TABLE_ENTRY_WORDS
from neuflow_hdl.regs import (CONFIG_ADDRESS, GRID_START_REG, GRID_STATUS, GRID_TILE, PORT_BASE_REG,
                              PORTS_START_REG, PORTS_STATUS, PORTS_STATUS_REG, REGISTER_BITS, Unit, config_address,
                              decode_address, pack_bits, stream_port_writes, streamer_address,
                              tile_config_writes)

from .cost import PassCost, pass_cycles, rect_beats
from .ir import printable
from .layout import KERNEL_WORD, MemoryKernel, Rect, kernel_words, stamp_address
from .rolling import PassCode, roll
from .schedule import weight_line

__all__ = ["CodeGen", "WeightFrames", "MachineState", "ResumePoint", "LAYER_ERROR_HALT", "RESUME_EVERY",
           "layer_label", "pass_label"]

LAYER_ERROR_HALT = 0x100

GRID_STATUS_ADDRESS = config_address(GRID_TILE, Unit.CONTROL, 0)
PORTS_STATUS_ADDRESS = streamer_address(0, PORTS_STATUS_REG)
#: The streamer's port start register.
_PORTS_START = streamer_address(0, PORTS_START_REG)


class WeightFrames:
    """Where the weight frames go in memory: from ``base`` up, each distinct
    frame once.  A :meth:`fork` sees its parent's frames and places new ones
    after them; :meth:`adopt` keeps a fork's."""

    def __init__(self, base, parent=None):
        self.end = base
        self.blocks = []            #: [(address, words)] placed here (not in the parent)
        self._index = {}            #: frame bytes -> address
        self._parent = parent

    def address(self, words, align=1, key=None):
        """The address of the frame ``words`` (placed now, at a multiple of
        ``align``, if it is new or placed elsewhere); ``key``: its bytes, if
        the caller has them."""
        if key is None:
            key = words.tobytes()
        frames = self
        while frames is not None:
            if key in frames._index and frames._index[key] % align == 0:
                return frames._index[key]
            frames = frames._parent
        self.end += -self.end % align
        self._index[key] = self.end
        self.blocks.append((self.end, words))
        self.end += len(words)
        return self._index[key]

    def fork(self):
        return WeightFrames(self.end, parent=self)

    def adopt(self, fork):
        self._index.update(fork._index)
        self.blocks += fork.blocks
        self.end = fork.end


#: A layer's code may be resumed at a pass that starts this many estimated
#: cycles or more after the layer's previous resume point, so a partitioned
#: run can cut a long layer into pieces of about this length.
RESUME_EVERY = 250_000


#: A run of passes that only write configuration and wait alike becomes a loop
#: over a table (:mod:`compiler.rolling`) when that makes it at most this much
#: slower by the cost model, or when its unrolled code has ``ROLL_ALWAYS``
#: instructions or more: so a program's size grows with its layers, not with
#: their passes.
ROLL_SLOWER = 0.01
ROLL_ALWAYS = 1024


def layer_label(index):
    """The label of layer ``index``'s first instruction (its cycle stamp)."""
    return f"layer_{index}"


def pass_label(layer, index):
    """The label of the first instruction of pass ``index`` (at least 1) of ``layer``."""
    return f"layer_{layer}_pass_{index}"


@dataclass(frozen=True, eq=False)
class MachineState:
    """What the code after a layer boundary assumes of the machine: every
    configuration register as last written (``shadow``; all started) and the
    kernel each tile holds (``loaded``: its k x k words)."""
    shadow: dict
    loaded: dict

    def to_json(self):
        return {"shadow": [[a, v] for a, v in self.shadow.items()],
                "loaded": [[t, kernel_words(k).tolist()] for t, k in self.loaded.items()]}

    @classmethod
    def from_json(cls, data, config):
        """A state from :meth:`to_json` (untrusted: ``ValueError`` naming what is
        out of shape or range)."""
        if not isinstance(data, dict) or set(data) != {"shadow", "loaded"}:
            raise ValueError("a state is an object with 'shadow' and 'loaded'")
        shadow, loaded = {}, {}
        for pair in _pairs(data["shadow"], "shadow"):
            address, value = pair
            if not (_whole(address) and 0 <= address < 1 << CONFIG_ADDRESS.size and _whole(value)
                    and 0 <= value < 1 << REGISTER_BITS):
                raise ValueError(f"shadow entry {pair!r}: not a configuration address and 32-bit value")
            shadow[address] = value
        low, high = config.fmt.min, config.fmt.max
        for pair in _pairs(data["loaded"], "loaded"):
            tile, kernel = pair
            if not (_whole(tile) and 0 <= tile < config.tiles and isinstance(kernel, list) and
                    len(kernel) in {k * k for k in range(1, config.kernel + 1)} and
                    all(_whole(w) and low <= w <= high for w in kernel)):
                raise ValueError(f"loaded entry for tile {tile!r}: not a tile of the grid and the "
                                 f"k x k weights of a kernel (k at most {config.kernel})")
            loaded[tile] = np.array(kernel, dtype=KERNEL_WORD).tobytes()
        return cls(shadow, loaded)


@dataclass(frozen=True, eq=False)
class ResumePoint:
    """A place where the program can be resumed: the start of a layer (pass 0)
    or of one of its passes, and the :class:`MachineState` its code assumes
    there."""
    layer: int
    pass_: int
    state: MachineState

    @property
    def label(self):
        return layer_label(self.layer) if self.pass_ == 0 else pass_label(self.layer, self.pass_)

    def to_json(self):
        return {"layer": self.layer, "pass": self.pass_, "state": self.state.to_json()}

    @classmethod
    def from_json(cls, data, config):
        """A point from :meth:`to_json` (untrusted: ``ValueError`` naming what is wrong)."""
        if not isinstance(data, dict) or set(data) != {"layer", "pass", "state"} or \
                not all(_whole(data[k]) and data[k] >= 0 for k in ("layer", "pass")):
            raise ValueError("a resume point is an object with a 'layer', a 'pass' and a 'state'")
        return cls(data["layer"], data["pass"], MachineState.from_json(data["state"], config))


def _whole(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _pairs(items, what):
    if not isinstance(items, list) or not all(isinstance(p, list) and len(p) == 2 for p in items):
        raise ValueError(f"'{what}' is a list of pairs")
    return items


@dataclass
class CodeGen:
    config: object                      #: GridConfig
    stamps: int                         #: word address of the cycle-stamp table
    frames: WeightFrames                #: where weight frames go
    lines: list = field(default_factory=list)
    shadow: dict = field(default_factory=dict)      #: config address -> value written
    loaded: dict = field(default_factory=dict)      #: tile -> kernel (bytes) it holds
    dirty: set = field(default_factory=set)         #: tiles with shadow writes not started
    points: list = field(default_factory=list)      #: the :class:`ResumePoint` s emitted
    layer_index: int = 0
    _writes: dict = field(default_factory=dict)     #: memo of tile and port writes (shared by forks)
    _frozen_of: dict = field(default_factory=dict)  #: id -> (configuration, its frozen form) (shared)
    #: tile or port -> the configuration last written to it whole (writing it
    #: again changes nothing, so it is skipped)
    _applied: dict = field(default_factory=dict)
    _tile_writes: dict = field(default_factory=dict)   #: tile -> the write list it last took whole
    _diffs: dict = field(default_factory=dict)         #: memo of :meth:`_changed` (shared by forks)
    _beats_of: dict = field(default_factory=dict)      #: memo of :meth:`_beats` (shared by forks)

    def __post_init__(self):
        self.weight_line = weight_line(self.config)
        self._count = 0
        self._port_keys = tuple(("port", port) for port in range(self.config.ports))

    def fork(self):
        """A trial generator that continues from this one's state; its lines are new."""
        return CodeGen(self.config, self.stamps, self.frames.fork(), shadow=dict(self.shadow),
                       loaded=dict(self.loaded), dirty=set(self.dirty), layer_index=self.layer_index,
                       _writes=self._writes, _frozen_of=self._frozen_of, _applied=dict(self._applied),
                       _tile_writes=dict(self._tile_writes), _diffs=self._diffs,
                       _beats_of=self._beats_of)

    def adopt(self, trial):
        """Keep what ``trial`` (a :meth:`fork` of this generator) emitted, and
        forget the memo of writes its trials shared (a layer's configurations
        seldom recur in the next, and the memo would grow with the passes)."""
        self.lines += trial.lines
        self.points += trial.points
        self.shadow, self.loaded, self.dirty = trial.shadow, trial.loaded, trial.dirty
        self._applied, self._tile_writes = trial._applied, trial._tile_writes
        self.layer_index = trial.layer_index
        self.frames.adopt(trial.frames)
        self._writes.clear()
        self._frozen_of.clear()
        self._diffs.clear()
        self._beats_of.clear()

    # -- low level ------------------------------------------------------------
    def emit(self, text):
        self.lines.append(f"    {text}")
        self._count += 1

    def comment(self, text):
        """A comment line.  ``text`` may come from the model (node names): every
        character that is not printable is escaped, so it can never end the
        comment and become code."""
        self.lines.append(f"; {printable(text)}")

    def _write(self, address, value):
        return self._write_all(((address, value),))

    def _write_all(self, writes):
        """Emit the ``(address, value)`` writes whose value differs from the
        shadow's; whether any did."""
        shadow, lines, written = self.shadow, self.lines, 0
        for address, value in writes:
            value &= 0xFFFF_FFFF
            if shadow.get(address) != value:
                lines.append((address, value))
                shadow[address] = value
                written += 1
        self._count += written
        return written > 0

    def _tile(self, setup_tile, routes, convolver=None, alu=None, mapper=None, preload=None):
        """Write a tile's configuration where it differs from the shadow;
        ``preload``: ``(offset, size)`` of the kernel it loads from the weight
        frame on the weight line during the pass, or None."""
        # Configurations compare as objects first (the scheduler shares them), then by value.
        applied = (routes, convolver, alu, mapper, preload)
        if self._applied.get(setup_tile) == applied:
            return
        self._applied[setup_tile] = applied
        key = (setup_tile, self._frozen(routes), self._frozen(convolver), self._frozen(alu),
               self._frozen(mapper), preload)
        writes = self._writes.get(key)
        if writes is None:
            if preload is not None:
                routes = dict(routes, convolver_weights=f"global_in_{self.weight_line}")
                convolver = dict(convolver or {}, preload=1, weight_skip=preload[0], preload_k=preload[1])
            c = self.config
            writes = tile_config_writes(setup_tile, globals_=c.globals_, fifos=c.fifos,
                                        width=c.fmt.width, segments=c.segments, routes=routes,
                                        convolver=convolver, alu=alu, mapper=mapper, start=False)
            self._writes[key] = writes
        # The tile's registers hold what its last configuration wrote (only
        # this method writes them between resumes), so only the writes that
        # differ from that configuration's can change the shadow.
        previous = self._tile_writes.get(setup_tile)
        self._tile_writes[setup_tile] = writes
        if previous is not None:
            writes = self._changed(previous, writes)
        if self._write_all(writes):
            self.dirty.add(setup_tile)

    def _changed(self, previous, writes):
        """The writes of ``writes`` whose address ``previous`` does not write the
        same value to (once per pair of write lists)."""
        held = self._diffs.get((id(previous), id(writes)))
        if held is None or held[0] is not previous or held[1] is not writes:
            before = dict(previous)
            held = self._diffs[id(previous), id(writes)] = (
                previous, writes, [(a, v) for a, v in writes if before.get(a, v + 1) != v])
        return held[2]

    def _frozen(self, config):
        """:func:`_freeze` of a configuration (routes, a convolver's, an ALU's or a
        mapper's), once per object: the scheduler shares one object among the
        tiles and passes that have the same configuration."""
        if config is None:
            return None
        held = self._frozen_of.get(id(config))
        if held is None or held[0] is not config:
            held = self._frozen_of[id(config)] = (config, _freeze(config))
        return held[1]

    def _describe(self, ports):
        """Descriptor writes of ``ports`` (:meth:`_ports`; a port latches its
        descriptor at start, so they may happen while it streams)."""
        applied = self._applied
        for port, rect, write, line, window in ports:
            shape = ("port", port, rect.width, rect.height, rect.stride, write, line, window)
            key, base = self._port_keys[port], rect.base
            held = applied.get(key)
            applied[key] = (base, shape)
            if held is None or held[1] != shape:
                self._write_all(self._port_writes(shape, base))
            elif held[0] != base:
                # The port's registers hold this shape's descriptor (only this
                # method writes them between resumes): its base register differs.
                self._write_base(shape, base)

    def _write_base(self, shape, base):
        """Write a port's base register (its descriptor of ``shape`` is written)."""
        self._write_all(((self._port_writes(shape, 0)[PORT_BASE_REG][0], _port_base(base)),))

    def _port_writes(self, shape, base):
        """The descriptor writes of a port's ``shape`` (:meth:`_describe`) at
        ``base``: those of the shape, packed once, with the base's register
        replaced (descriptors of one shape differ in that word alone)."""
        writes = self._writes.get(shape)
        if writes is None:
            _, port, width, height, stride, write, line, window = shape
            extra = {"window_base": window[0], "window_size": window[1]} if window else {}
            writes = self._writes[shape] = stream_port_writes(
                port, base=0, width=width, height=height, stride=stride, write=write, line=line, start=False,
                **extra)
        if base:
            writes = list(writes)
            writes[PORT_BASE_REG] = (writes[PORT_BASE_REG][0], _port_base(base))
        return writes

    def _wait_not_busy(self, address, layout):
        """Poll the status register at ``address`` until its ``busy`` bit is clear."""
        self.lines.append(_wait_line(address, layout))
        self._count += 1

    def _wait_ports(self):
        """Wait until no streamer port is busy (one poll for a whole pass)."""
        self._wait_not_busy(PORTS_STATUS_ADDRESS, PORTS_STATUS)

    # -- program structure -------------------------------------------------------
    def begin(self):
        self._count = 0
        self.comment("NeuFlow program generated by the compiler")

    def layer(self, name):
        """Start a layer: a comment, its label and a cycle stamp in the stamp table."""
        self.comment(f"layer {self.layer_index}: {name}")
        self.lines.append(f"{layer_label(self.layer_index)}:")
        self.stamp(self.layer_index)
        self.layer_index += 1

    def stamp(self, slot):
        """Store the cycle counter in slot ``slot`` of the stamp table (two
        instructions, ``cycles`` and ``st``)."""
        self.emit("cycles r1")
        self.emit(f"st r1, {stamp_address(self.stamps, slot)}(r0)")

    def check_layer(self):
        """Halt with ``LAYER_ERROR_HALT + layer`` if the grid or a streamer port
        reports an error; returns the configuration reads it emits."""
        statuses = ((GRID_STATUS_ADDRESS, GRID_STATUS), (PORTS_STATUS_ADDRESS, PORTS_STATUS))
        for address, layout in statuses:
            self.emit(f"cfgr r2, {address:#07x}")
            self.emit(f"li r3, {pack_bits(layout, {'error': 1}):#x}")
            self.emit("and r2, r2, r3")
            self.emit(f"bne r2, r0, fail_{self.layer_index - 1}")
        return len(statuses)

    def end(self):
        self.stamp(self.layer_index)
        self.emit("halt 0")
        for n in range(self.layer_index):
            self.lines.append(f"fail_{n}:")
            self.emit(f"halt {LAYER_ERROR_HALT + n:#x}")

    def state(self):
        """The :class:`MachineState` at this point, a layer boundary."""
        assert not self.dirty, "a layer boundary leaves no tile unstarted"
        return MachineState(dict(self.shadow), dict(self.loaded))

    def resume(self, state):
        """Code that brings a processor fresh from reset to ``state``: the
        kernels preloaded in one weight frame, then every register written and
        every tile started, with nothing streaming."""
        self._applied.clear()
        self._tile_writes.clear()
        frame = _frame(dict(sorted(state.loaded.items())))
        slots, where = frame
        if slots:
            self._shadow(None, frame)
            self._start_tiles(where)
            self._weight_port(0, frame, self.frames.address)
            self._wait_ports()
            self._wait_idle()
        for address, value in state.shadow.items():
            tile = decode_address(address)[0]
            if self._write(address, value) and tile < self.config.tiles:
                self.dirty.add(tile)
        self._start_tiles(())
        self._wait_idle()
        self.loaded = dict(state.loaded)

    def measure(self):
        """Instructions emitted since the last call (for the estimate)."""
        count, self._count = self._count, 0
        return count

    def _wait_idle(self):
        """Wait until no tile holds words (GRID_STATUS.busy clear)."""
        self._wait_not_busy(GRID_STATUS_ADDRESS, GRID_STATUS)

    def _frames(self, passes):
        """Per pass: ``(slots, tile -> slot)``, the kernels its tiles must
        preload (tile -> kernel), each distinct kernel once.  ``self.loaded``
        becomes what the tiles hold after the passes."""
        held = dict(self.loaded)
        frames = []
        for p in passes:
            wanted, memory = {}, False
            for s in p.tiles:
                key = s.weights         # a kernel's words as bytes, or a MemoryKernel
                if key is not None and held.get(s.tile) != key:
                    wanted[s.tile] = held[s.tile] = key
                    memory = memory or type(key) is MemoryKernel
            if memory:
                # A frame reads kernels where they are in memory, in one
                # rectangle: it loads all of the pass's, not only those missing.
                wanted = {s.tile: s.weights for s in p.tiles if isinstance(s.weights, MemoryKernel)}
            frames.append(_frame(wanted))
        self.loaded = held
        return frames

    def _shadow(self, p, frame):
        """Shadow writes of pass ``p`` (None: no pass) whose tiles preload ``frame``."""
        where = frame[1] if frame is not None else {}
        at = _slot_offsets(frame[0], self.config.kernel) if where else ()
        setups = [None] * self.config.tiles
        if p is not None:
            for s in p.tiles:
                setups[s.tile] = s
        applied = self._applied
        for tile, s in enumerate(setups):
            slot = where.get(tile) if where else None
            preload = None if slot is None else at[slot]
            if s is not None:
                configuration = (s.routes, s.convolver, s.alu, s.mapper, preload)
            else:
                configuration = (_NO_ROUTES, None, None, None, preload)
            if applied.get(tile) != configuration:      # else nothing to write (see _tile)
                self._tile(tile, *configuration)

    def _ports(self, p, frame, frame_address):
        """The transfers of pass ``p`` (``frame``: the weight frame streaming with
        it, or None): ``[(port, rect, write, line, window)]``, write ports
        first, then reads, then the frame on the weight line."""
        ports = [(port, rect, True, line, window) for port, (line, rect, window) in enumerate(p.writes)]
        first = len(ports)
        ports += [(port, rect, False, line, None) for port, (line, rect) in enumerate(p.reads, first)]
        if frame is not None:
            ports.append((len(ports), _frame_rect(frame, frame_address, self.config.kernel), False,
                          self.weight_line, None))
        return ports

    def emit_layer(self, name, passes):
        """Code for one layer's :class:`~compiler.schedule.Pass` list, between its
        cycle stamp and its status check.  Returns the
        :class:`~compiler.cost.PassCost` of each pass as emitted (the stamp
        counts in the first pass, the check in the last)."""
        self.measure()
        self.points.append(ResumePoint(self.layer_index, 0, self.state()))
        self.layer(f"{name}: {len(passes)} passes")
        # A layer without passes (a concatenation in place) is its stamp and check.
        costs = self._emit_passes(passes) if passes else [PassCost(streams=(), latency=0, serial=self.measure())]
        # What a kernel read from memory held may change with the next layers' writes.
        self.loaded = {tile: key for tile, key in self.loaded.items() if isinstance(key, bytes)}
        reads = self.check_layer()
        costs[-1] = costs[-1].plus(after=self.measure(), reads=reads)
        return costs

    def _emit_passes(self, passes):
        frame_address = self.frames.address
        held = dict(self.loaded)            # the kernel each tile holds during pass n
        frames = self._frames(passes)
        # ahead[n]: the frame that streams during pass n (pass n+1's kernels), or
        # None.  It goes on a port of its own when pass n leaves one free
        # ("inline"), otherwise first, on its own ("alone").
        ahead = [frame if frame[1] else None for frame in frames[1:]] + [None]
        inline, alone = [], []
        for p, frame in zip(passes, ahead):
            free = len(p.writes) + len(p.reads) < self.config.ports
            inline.append(frame if free else None)
            alone.append(None if free else frame)
        costs = []
        prologue, alone_words = 0, []
        if frames[0][1]:            # the first pass's kernels, with nothing else streaming
            self._shadow(None, frames[0])
            self._start_tiles(frames[0][1])
            alone_words.append(self._weight_port(0, frames[0], frame_address))
            self._wait_ports()
            self._wait_idle()
            prologue = self.measure()
        self._shadow(passes[0], ahead[0])
        ports = self._ports(passes[0], inline[0], frame_address)
        since = 0                   # estimated cycles since the last resume point
        marks = []                  # per pass: where its unit's regions start, and its end
        for n, p in enumerate(passes):
            begin = len(self.lines)
            slots, where = frames[n]
            held.update(zip(where, map(slots.__getitem__, where.values())))
            if n and since >= RESUME_EVERY and not _reads_memory(held):
                self._resume_point(n, dict(held))
                since = 0
            self._start_tiles(where, ahead[n][1] if ahead[n] else ())
            if alone[n] is not None:
                self.comment("weight frame first: the data streams use every port")
                alone_words.append(self._weight_port(0, alone[n], frame_address))
                self._wait_ports()
            if n == 0 or alone[n] is not None:  # else written during the previous pass
                self._describe(ports)
            self._go((1 << len(ports)) - 1)
            streams, frame, beats = self._stream_words(ports)
            serial = self.measure()        # the streams run from here
            mid = len(self.lines)
            if n + 1 < len(passes):
                self._shadow(passes[n + 1], ahead[n + 1])
                following = self._ports(passes[n + 1], inline[n + 1], frame_address)
                self._describe(following)
            overlapped = self.measure()
            tail = len(self.lines)
            self._wait_ports()
            if ahead[n]:
                self._wait_idle()
            waits = self.measure()
            marks.append((begin, mid, tail, len(self.lines)))
            if n + 1 < len(passes):
                ports = following
            costs.append(PassCost(streams=streams, latency=p.latency, frame=frame,
                                  serial=prologue + serial, overlapped=overlapped, waits=waits,
                                  alone=tuple(alone_words), beats=beats))
            since += pass_cycles(costs[-1])
            prologue, alone_words = 0, []
        return self._roll(marks, costs)

    def _stream_words(self, ports):
        """``(data streams' words, the weight frame's words, bus beats)`` of the transfers ``ports``."""
        streams, frame, beats, weights = [], [], 0, self.weight_line
        for _, rect, _, line, _ in ports:
            (frame if line == weights else streams).append(rect.words)
            beats += self._beats(rect)
        return tuple(streams), tuple(frame), beats

    def _beats(self, rect):
        """:func:`~compiler.cost.rect_beats` of ``rect``, once per object (a
        pass's rectangles are its job's, shared by its passes)."""
        held = self._beats_of.get(id(rect))
        if held is None or held[0] is not rect:
            held = self._beats_of[id(rect)] = (rect, rect_beats(rect, self.config.beat_words))
        return held[1]

    def _roll(self, marks, costs):
        """Roll the passes' units (``marks``: their line indexes) into loops
        (:func:`compiler.rolling.roll`) and add what that costs to ``costs``;
        the loop's last branch counts after the last pass."""
        units = [PassCode(tuple(self.lines[b:m]), tuple(self.lines[m:t]), tuple(self.lines[t:e]))
                 for b, m, t, e in marks]

        def accept(start, added):
            """Roll a run if it costs little time or its code is long."""
            run = costs[start:start + len(added)]
            before = sum(pass_cycles(c) for c in run)
            after = sum(pass_cycles(c.plus(serial=a.serial + a.after, overlapped=a.overlapped))
                        for c, a in zip(run, added))
            instructions = sum(c.serial + c.overlapped + c.waits for c in run)
            return after <= before * (1 + ROLL_SLOWER) or instructions >= ROLL_ALWAYS

        lines, added = roll(units, lambda words: self.frames.address(words, align=TABLE_ENTRY_WORDS),
                            f"loop_{self.layer_index - 1}", accept)
        self.lines[marks[0][0]:] = lines
        after = [0] + [a.after for a in added]      # a pass's branch runs before the next pass
        costs = [c.plus(serial=a.serial + before, overlapped=a.overlapped)
                 for c, a, before in zip(costs, added, after)]
        costs[-1] = costs[-1].plus(after=after[-1])
        return costs

    def _resume_point(self, index, held):
        """Label pass ``index`` of the current layer and record its state: the
        registers as written (its own shadow writes included, made during the
        previous pass) and the kernels the tiles hold during it."""
        layer = self.layer_index - 1
        self.lines.append(f"{pass_label(layer, index)}:")
        self.points.append(ResumePoint(layer, index, MachineState(dict(self.shadow), dict(held))))

    def _start_tiles(self, *also):
        """Start every tile with unstarted shadow writes and every tile in each
        of ``also``: one grid write per group of 32 tiles."""
        started = sum(map(_TILE_BITS.__getitem__, self.dirty.union(*also)))
        group = 0
        while started:
            if started & 0xFFFF_FFFF:
                self.lines.append((_grid_start(group), started & 0xFFFF_FFFF))
                self._count += 1
            started >>= 32
            group += 1
        self.dirty = set()

    def _go(self, mask):
        """Start the ports set in ``mask`` with one write."""
        if mask:
            self.lines.append((_PORTS_START, mask))
            self._count += 1

    def _weight_port(self, port, frame, frame_address):
        """Stream a weight frame on the weight line; returns its words."""
        rect = _frame_rect(frame, frame_address, self.config.kernel)
        self._describe([(port, rect, False, self.weight_line, None)])
        self._go(1 << port)
        return rect.words


#: A tile without a pass: no routes.
_NO_ROUTES = {}
#: Each tile's bit in the tiles' start registers taken as one number
#: (a register per 32 tiles).
_TILE_BITS = tuple(1 << tile for tile in range(GRID_TILE))


def _port_base(base):
    """``base`` as a port's base register holds it (``ValueError`` if it does not fit)."""
    if not 0 <= base < 1 << REGISTER_BITS:
        raise ValueError(f"field base: {base} does not fit unsigned({REGISTER_BITS})")
    return base


@lru_cache(maxsize=None)
def _grid_start(group):
    """The grid's start register of the tiles ``32 group`` to ``32 group + 31``."""
    return config_address(GRID_TILE, Unit.CONTROL, GRID_START_REG + group)


@lru_cache(maxsize=None)
def _wait_line(address, layout):
    """The line of a poll of the status register at ``address`` until the
    ``busy`` bit of its ``layout`` is clear."""
    return f"    wait {pack_bits(layout, {'busy': 1}):#04x}, 0x00, {address:#07x}"


def _frame(kernels):
    """The weight frame that loads ``kernels`` (tile -> a k x k kernel's words as
    bytes, or a :class:`~compiler.layout.MemoryKernel`): ``(slots, tile ->
    slot)``, each distinct kernel once (as it was given)."""
    index, where = {}, {}
    for tile, key in kernels.items():
        where[tile] = index.setdefault(key, len(index))
    return list(index), where


def _slot_offsets(slots, K):
    """``[(word offset, kernel size)]`` of each slot of a weight frame: a
    kernel's k x k words (as bytes), or K x K read from memory (a frame holds
    one kind, see :meth:`CodeGen._frames`)."""
    if type(slots[0]) is MemoryKernel:
        return _offsets((K * K,) * len(slots))
    return _offsets(tuple(map(len, slots)), KERNEL_WORD.itemsize)


@lru_cache(maxsize=1 << 12)
def _offsets(sizes, unit=1):
    """:func:`_slot_offsets` of slots of ``sizes`` units of ``unit`` bytes."""
    at, offset = [], 0
    for size in sizes:
        words = size // unit
        at.append((offset, _side(words)))
        offset += words
    return at


@lru_cache(maxsize=None)
def _side(words):
    """The side of a square kernel of ``words`` words."""
    return math.isqrt(words)


def _reads_memory(kernels):
    """Whether some tile's kernel in ``kernels`` (tile -> key) is read from memory."""
    return any(isinstance(key, MemoryKernel) for key in kernels.values())


def _frame_rect(frame, frame_address, K):
    """The memory words of a weight frame (its slots, one after the other): the
    kernels' words placed by ``frame_address``, or, for kernels read from
    memory, the consecutive kernels where they are."""
    slots = frame[0]
    if isinstance(slots[0], MemoryKernel):
        first, step, words = slots[0].address, slots[0].step, K * K
        if any(not isinstance(s, MemoryKernel) or s.step != step or s.address != first + n * words * step
               for n, s in enumerate(slots)):
            raise AssertionError("a frame of kernels read from memory takes consecutive kernels")
        if step == 1:
            return _Words(first, len(slots) * words)
        return Rect(first, 1, len(slots) * words, step)
    key = b"".join(slots)
    words = np.frombuffer(key, dtype=np.int64)
    return _Words(frame_address(words, key=key), len(words))


def _freeze(value):
    """A hashable form of a configuration (dicts, lists, scalars)."""
    if isinstance(value, dict):
        return tuple(sorted((k, v if isinstance(v, (int, str)) else _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class _Words:
    """A 1 x n rectangle (a weight frame's words)."""
    base: int
    width: int
    height: int = 1

    @property
    def stride(self):
        return self.width

    @property
    def words(self):
        return self.width

