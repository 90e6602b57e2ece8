"""Configuration-register layouts of the tile operators: defined once, here.

Each operator's configuration is one ``data.StructLayout``.  Gateware views
its ``config`` port through it, and software packs values with
:func:`pack_bits` and splits the bits into 32-bit registers
(register ``r`` holds bits ``32*r .. 32*r+31``); reserved fields keep related
fields inside one register.  Enumerations are ``enum.Enum`` with a shape, so
the same names work in Python and in hardware.
"""


from functools import lru_cache

from amaranth.hdl import Shape, Value, signed, unsigned
from amaranth.lib import data, enum

__all__ = [
    "REGISTER_BITS", "ConvMode", "AluOp", "Symmetry", "PoolMode", "POOL_CONFIG", "CONV_CONFIG", "ALU_CONFIG",
    "sample_layout", "mapper_config_layout", "pack_bits", "pack_registers", "register_count", "hdl_register_enables", "hdl_write_registers", "unpack_registers",
    "GEOMETRY_BITS", "MAX_KERNEL", "MAX_STRIDE", "Unit", "CONFIG_ADDRESS", "GRID_TILE", "CONTROL",
    "STATUS", "GRID_STATUS", "CONTROL_REG", "STATUS_REG", "ROUTE_NONE", "ROUTE_BITS", "NEIGHBOURS", "OPPOSITE",
    "OFFSET",
    "router_sources", "router_sinks", "config_address", "decode_address", "unpack_bits",
    "tile_config_writes", "control_write",
    "STREAMER_TILE", "STREAM_PORT", "PORT_BASE_REG", "PORT_START_REG", "PORT_STATUS_REG", "PORT_STATUS",
    "PORTS_START_REG", "PORTS_STATUS_REG", "PORTS_STATUS", "GRID_START_REG",
    "streamer_address", "stream_port_writes",
]

REGISTER_BITS = 32
GEOMETRY_BITS = 12          # image width / height fields: 1 .. 4095
MAX_KERNEL = 15             # the kernel-size field's range; a convolver's K may be less
MAX_STRIDE = 15


class ConvMode(enum.Enum, shape=2):
    """What the convolver computes over each window."""
    MAC = 0         #: sum of products + bias, narrowed by ``shift``
    MAC_PSUM = 1    #: as MAC, plus a partial-sum stream word aligned by ``shift``
    MAX = 2         #: window maximum (pooling); no bias, no shift


class AluOp(enum.Enum, shape=4):
    """Term-by-term operations of the StreamALU (``b`` is a stream or a constant)."""
    ADD = 0
    SUB = 1
    MUL = 2
    DIV = 3
    MAX = 4
    MIN = 5
    SQUARE = 6      #: a * a; ``b`` unused
    ABS = 7         #: |a|; ``b`` unused


class PoolMode(enum.Enum, shape=2):
    """The mapper's pool stage: 2 x 2 windows at stride 2 of the mapped words."""
    NONE = 0        #: words pass through
    SUM = 1         #: the sum of the window, narrowed by the pool ``shift`` (average: shift 2)
    MAX = 2         #: the window maximum, narrowed by the pool ``shift`` (usually 0)


class Symmetry(enum.Enum, shape=2):
    """Piecewise-linear mapper symmetry: segments describe ``x >= 0`` when not NONE."""
    NONE = 0        #: segments cover the whole input range
    ODD = 1         #: f(-x) = -f(x)
    EVEN = 2        #: f(-x) = f(x)


CONV_CONFIG = data.StructLayout({
    # register 0
    "width":     unsigned(GEOMETRY_BITS),   # input image width in words
    "height":    unsigned(GEOMETRY_BITS),   # input image height in rows
    "k":         unsigned(4),               # kernel size, 1 .. K
    "stride":    unsigned(4),               # 1 .. 15
    # register 1
    "mode":      ConvMode,
    "shift":     unsigned(6),               # output shift, 0 .. word width
    "preload":   unsigned(1),               # weights go to the next-pass bank (see Convolver)
    "weight_skip": unsigned(16),            # preload: words of the weight frame before ours
    "preload_k": unsigned(4),               # preload: the size of the kernel it takes, 1 .. K (0: K)
    "reserved1": unsigned(3),
    # register 2: bias, in the accumulator's format (fraction bits of x * w)
    "bias":      signed(32),
})

ALU_CONFIG = data.StructLayout({
    # register 0
    "op":        AluOp,
    "b_const":   unsigned(1),               # 1: operand b is ``const``, not the b stream
    "reserved0": unsigned(3),
    "shift":     unsigned(6),               # output shift (DIV: pre-scale of a), 0 .. width
    "reserved1": unsigned(18),
    # register 1
    "const":     signed(32),                # operand b when ``b_const``; low word bits used
})


@lru_cache(maxsize=None)
def sample_layout(width):
    """Payload of every data stream: a word and its position flags.

    ``eol`` marks the last word of a row, ``eof`` the last word of a frame (it
    implies ``eol``).  Operators check the flags they receive against their
    configured geometry, so a stream of the wrong size is reported, not absorbed.
    """
    return data.StructLayout({"data": signed(width), "eol": unsigned(1), "eof": unsigned(1)})


POOL_CONFIG = data.StructLayout({
    "mode":      PoolMode,
    "shift":     unsigned(4),               # output shift of the window's sum or maximum, 0 .. 15
    "width":     unsigned(GEOMETRY_BITS),   # the mapped frame's width in words (2 or more)
    "height":    unsigned(GEOMETRY_BITS),   # and its height in rows (2 or more)
    "reserved":  unsigned(2),
})


@lru_cache(maxsize=None)
def mapper_config_layout(width, segments):
    """Mapper configuration: control register, pool-stage register, then three
    registers per segment."""
    segment = data.StructLayout({
        "bound":  signed(REGISTER_BITS),    # lower bound of x (input format); low word bits used
        "slope":  signed(REGISTER_BITS),    # a: ``shift`` more fraction bits than the output
        "offset": signed(REGISTER_BITS),    # b: output format
    })
    return data.StructLayout({
        # register 0
        "symmetry":  Symmetry,
        "shift":     unsigned(6),
        "reserved0": unsigned(24),
        # register 1: the pool stage after the mapping (see Mapper)
        "pool":      POOL_CONFIG,
        "segments":  data.ArrayLayout(segment, segments),
    })


def hdl_write_registers(m, target, enables, wdata):
    """Gateware: write the 32-bit ``wdata`` into register ``r`` of ``target`` (a
    signal of a register layout; register ``r`` is bits ``32*r .. 32*r+31``,
    the last one possibly shorter) when ``enables[r]``: one enable per
    register (see :func:`hdl_register_enables`)."""
    bits = Value.cast(target)
    assert len(enables) == -(-len(bits) // REGISTER_BITS)
    for r, enable in enumerate(enables):
        top = min(len(bits), REGISTER_BITS * (r + 1))
        with m.If(enable):
            m.d.sync += bits[REGISTER_BITS * r:top].eq(wdata[:top - REGISTER_BITS * r])


def hdl_register_enables(enable, reg, layout):
    """Gateware: the write enable of each register of ``layout`` when a write
    (``enable``) names register ``reg``."""
    return [enable & (reg == r) for r in range(register_count(layout))]


@lru_cache(maxsize=None)
def _leaves(layout):
    """The scalar fields of a (nested) layout: ``(path, offset, width, signed)``;
    a path is a tuple of field names and array indices."""
    leaves = []
    for name, field in layout:
        shape = field.shape
        if isinstance(shape, (data.StructLayout, data.ArrayLayout)):
            leaves += [((name, *path), field.offset + offset, width, sign)
                       for path, offset, width, sign in _leaves(shape)]
        else:
            s = Shape.cast(shape)
            leaves.append(((name,), field.offset, s.width, s.signed))
    return tuple(leaves)


def pack_bits(layout, values):
    """The bit pattern of ``layout`` holding ``values`` (nested dicts and lists; a
    missing field is 0): what ``layout.const(values).as_bits()`` gives, in plain
    Python, because the compiler packs millions of registers.  A value that does
    not fit its field raises ``ValueError`` naming the field."""
    bits = 0
    for path, offset, width, sign in _leaves(layout):
        value = values
        for key in path:
            try:
                value = value[key]
            except (KeyError, IndexError):
                value = 0
                break
        value = int(value.value if isinstance(value, enum.Enum) else value)
        low, high = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if sign else (0, (1 << width) - 1)
        if not low <= value <= high:
            raise ValueError(f"field {'.'.join(map(str, path))}: {value} does not fit "
                             f"{'signed' if sign else 'unsigned'}({width})")
        bits |= (value & ((1 << width) - 1)) << offset
    return bits


def unpack_bits(layout, bits):
    """The scalar fields of ``layout`` in the bit pattern ``bits``, as a flat dict
    ``{path: int}`` (a path joins nested names and indices with dots): the
    inverse of :func:`pack_bits`, with signed fields sign-extended."""
    fields = {}
    for path, offset, width, sign in _leaves(layout):
        value = (bits >> offset) & ((1 << width) - 1)
        if sign and value >> (width - 1):
            value -= 1 << width
        fields[".".join(map(str, path))] = value
    return fields


@lru_cache(maxsize=None)
def register_count(layout):
    """How many 32-bit registers ``layout`` takes."""
    return -(-layout.size // REGISTER_BITS)


def pack_registers(layout, values):
    """Pack a dict of field values with ``layout`` into a list of 32-bit register words."""
    bits = pack_bits(layout, values)
    return [(bits >> (REGISTER_BITS * r)) & 0xFFFF_FFFF for r in range(register_count(layout))]


def unpack_registers(words):
    """Inverse of :func:`pack_registers`: register words to the raw bit pattern."""
    return sum(w << (REGISTER_BITS * r) for r, w in enumerate(words))


# -- Configuration bus --------------------------------------------------------

class Unit(enum.Enum, shape=4):
    """Which block of a tile a configuration address names."""
    CONTROL = 0     #: reg 0: CONTROL (write), reg 1: STATUS (read)
    ROUTER = 1      #: reg n: source select of sink n (see :func:`router_sinks`)
    CONVOLVER = 2   #: CONV_CONFIG registers
    ALU = 3         #: ALU_CONFIG registers
    MAPPER = 4      #: mapper_config_layout registers
    FIFO_BANK = 5   #: reg 0: chain bits


#: A configuration-bus address: 20 bits, ``tile << 12 | unit << 8 | reg``.
CONFIG_ADDRESS = data.StructLayout({
    "reg":  unsigned(8),
    "unit": Unit,
    "tile": unsigned(8),            # row-major tile index; GRID_TILE addresses the grid
})
GRID_TILE = 0xFF                    #: tile field of grid-level registers (reg 0: GRID_STATUS)
#: Write-only grid registers (unit CONTROL): ``GRID_START_REG + g`` starts every
#: tile ``32 g + i`` whose bit ``i`` is set, as a CONTROL write with ``start`` would.
GRID_START_REG = 0x10

CONTROL_REG, STATUS_REG = 0, 1

#: Write-only CONTROL register of a tile.
CONTROL = data.StructLayout({
    "start": unsigned(1),           # shadow configuration -> active, operators rewind
    "flush": unsigned(1),           # empty every FIFO and pipeline of the tile
    "reserved": unsigned(30),
})

#: Read-only STATUS register of a tile (NeuFlow: idle / busy / done / misconfigured).
STATUS = data.StructLayout({
    "busy": unsigned(1),            # an operator holds a partial frame or a FIFO holds words
    "done": unsigned(1),            # since the last start, a frame end left the tile and it is idle
    "error": unsigned(1),           # any of the error bits below
    "route_error": unsigned(1),     # a sink selects a source that does not exist
    "convolver_error": unsigned(1),
    "alu_error": unsigned(1),
    "mapper_error": unsigned(1),
    "reserved": unsigned(25),
})

#: Read-only grid status (tile GRID_TILE, reg 0).
GRID_STATUS = data.StructLayout({
    "busy": unsigned(1),            # any tile busy
    "error": unsigned(1),           # any tile in error, or a global output driven by two tiles
    "global_conflict": unsigned(1),
    "reserved": unsigned(29),
})

ROUTE_NONE = 0x3F                   #: select value of an unused sink
ROUTE_BITS = 6

NEIGHBOURS = ("north", "east", "south", "west")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
#: (row, column) step from a tile to its neighbour in each direction.
OFFSET = {"north": (-1, 0), "east": (0, 1), "south": (1, 0), "west": (0, -1)}


def router_sources(globals_, fifos):
    """Names of a tile's stream sources, in select-code order."""
    return ([f"{d}_in" for d in NEIGHBOURS] + [f"global_in_{g}" for g in range(globals_)] +
            ["convolver", "alu", "mapper"] + [f"fifo_{n}" for n in range(fifos)])


def router_sinks(globals_, fifos):
    """Names of a tile's stream sinks, in router-register order."""
    return (["convolver_in", "convolver_psum", "convolver_weights", "alu_a", "alu_b", "mapper_in"] +
            [f"fifo_{n}_in" for n in range(fifos)] + [f"{d}_out" for d in NEIGHBOURS] +
            [f"global_out_{g}" for g in range(globals_)])


@lru_cache(maxsize=None)
def config_address(tile, unit, reg):
    """The 20-bit configuration-bus address of ``reg`` of ``unit`` in ``tile``."""
    return pack_bits(CONFIG_ADDRESS, {"tile": tile, "unit": Unit(unit), "reg": reg})


def decode_address(address):
    """``(tile, unit, reg)`` of a configuration-bus address, as integers (the unit
    field of a streamer address is its port number, not a :class:`Unit`)."""
    f = unpack_bits(CONFIG_ADDRESS, address)
    return f["tile"], f["unit"], f["reg"]


def tile_config_writes(tile, *, globals_, fifos, width=16, segments=8, routes=None,
                       convolver=None, alu=None, mapper=None, chain=None, start=True):
    """Configuration-bus writes ``[(address, data)]`` that set up one tile.

    ``routes`` maps sink names to source names (:func:`router_sinks`,
    :func:`router_sources`); sinks not named are set to ROUTE_NONE.  Operator
    configurations are field dicts of their layouts.  With ``start`` the last
    write makes it all active.  Unknown names raise ``ValueError`` naming them.
    """
    sinks, sources = router_sinks(globals_, fifos), router_sources(globals_, fifos)
    writes = []
    routes = dict(routes or {})
    for name in routes:
        if name not in sinks:
            raise ValueError(f"tile {tile}: no sink {name!r}; sinks: {', '.join(sinks)}")
        if routes[name] not in sources:
            raise ValueError(f"tile {tile}: no source {routes[name]!r} for sink {name!r}; "
                             f"sources: {', '.join(sources)}")
    for k, name in enumerate(sinks):
        select = sources.index(routes[name]) if name in routes else ROUTE_NONE
        writes.append((config_address(tile, Unit.ROUTER, k), select))
    for unit, layout, values in ((Unit.CONVOLVER, CONV_CONFIG, convolver), (Unit.ALU, ALU_CONFIG, alu),
                                 (Unit.MAPPER, mapper_config_layout(width, segments), mapper)):
        if values is not None:
            for r, word in enumerate(pack_registers(layout, values)):
                writes.append((config_address(tile, unit, r), word))
    if chain is not None:
        writes.append((config_address(tile, Unit.FIFO_BANK, 0), chain))
    if start:
        writes.append((config_address(tile, Unit.CONTROL, CONTROL_REG),
                       pack_bits(CONTROL, {"start": 1})))
    return writes


def control_write(tile, *, start=False, flush=False):
    return (config_address(tile, Unit.CONTROL, CONTROL_REG),
            pack_bits(CONTROL, {"start": int(start), "flush": int(flush)}))


# -- Streamer ports -------------------------------------------------------------

STREAMER_TILE = 0xFE                #: tile field of streamer registers; unit field = port number

#: A streamer port's descriptor: registers 0 .. 5 of the port.
STREAM_PORT = data.StructLayout({
    "base": unsigned(32),           # word address of the rectangle's first word
    "width": unsigned(16),          # words per row
    "height": unsigned(16),         # rows
    "stride": unsigned(32),         # words from one row's start to the next
    "window_base": unsigned(32),    # the only memory the port may touch:
    "window_size": unsigned(32),    #   window_base .. window_base + window_size - 1
    "write": unsigned(1),           # 0: memory -> grid global_in[line]; 1: grid global_out[line] -> memory
    "line": unsigned(4),            # global line
    "reserved": unsigned(27),
})
#: The descriptor register that holds ``base`` alone: a port's descriptor for
#: another rectangle of the same shape differs from it in this word only.
PORT_BASE_REG = STREAM_PORT["base"].offset // REGISTER_BITS
assert STREAM_PORT["base"].offset % REGISTER_BITS == 0 and \
    Shape.cast(STREAM_PORT["base"].shape).width == REGISTER_BITS
PORT_START_REG = 6                  #: write: start the transfer (any value)
PORT_STATUS_REG = 7                 #: read: PORT_STATUS
PORTS_START_REG = 8                 #: write, unit 0 only: start every port whose bit is set
PORTS_STATUS_REG = 9                #: read, unit 0 only: PORTS_STATUS of all ports at once

PORT_STATUS = data.StructLayout({
    "busy": unsigned(1),
    "done": unsigned(1),            # the last transfer completed
    "error": unsigned(1),           # the rectangle left the window (nothing was touched) or
                                    # a written frame's flags disagreed with its geometry
    "reserved": unsigned(29),
})

PORTS_STATUS = data.StructLayout({
    "busy": unsigned(1),            # some port is busy
    "error": unsigned(1),           # some port reports an error
    "reserved": unsigned(30),
})


@lru_cache(maxsize=None)
def streamer_address(port, reg):
    """Configuration-bus address of register ``reg`` of streamer ``port``."""
    if not 0 <= port < 16:
        raise ValueError(f"streamer port must be 0 .. 15, not {port}")
    return pack_bits(CONFIG_ADDRESS, {"tile": STREAMER_TILE, "unit": port, "reg": reg})


def stream_port_writes(port, *, base, width, height, stride=None, window_base=0,
                       window_size=0xFFFF_FFFF, write=False, line=0, start=True):
    """Configuration writes ``[(address, data)]`` that describe and start a port."""
    values = {"base": base, "width": width, "height": height,
              "stride": width if stride is None else stride, "window_base": window_base,
              "window_size": window_size, "write": int(write), "line": line}
    writes = [(streamer_address(port, r), word)
              for r, word in enumerate(pack_registers(STREAM_PORT, values))]
    if start:
        writes.append((streamer_address(port, PORT_START_REG), 1))
    return writes
