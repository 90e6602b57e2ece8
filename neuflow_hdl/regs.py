"""Configuration-register layouts of the tile operators: defined once, here.

Each operator's configuration is one ``data.StructLayout``.  Gateware views
its ``config`` port through it, and software packs values with
``layout.const({...}).as_bits()`` and splits the bits into 32-bit registers
(register ``r`` holds bits ``32*r .. 32*r+31``); reserved fields keep related
fields inside one register.  Enumerations are ``enum.Enum`` with a shape, so
the same names work in Python and in hardware.
"""


from functools import lru_cache

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

__all__ = [
    "REGISTER_BITS", "ConvMode", "AluOp", "Symmetry", "CONV_CONFIG", "ALU_CONFIG",
    "sample_layout", "mapper_config_layout", "pack_registers", "unpack_registers",
    "GEOMETRY_BITS", "MAX_KERNEL", "MAX_STRIDE",
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
    "reserved1": unsigned(24),
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


@lru_cache(maxsize=None)
def mapper_config_layout(width, segments):
    """Mapper configuration: control register, then three registers per segment."""
    segment = data.StructLayout({
        "bound":  signed(REGISTER_BITS),    # lower bound of x (input format); low word bits used
        "slope":  signed(REGISTER_BITS),    # a: ``shift`` more fraction bits than the output
        "offset": signed(REGISTER_BITS),    # b: output format
    })
    return data.StructLayout({
        "symmetry":  Symmetry,
        "shift":     unsigned(6),
        "reserved0": unsigned(24),
        "segments":  data.ArrayLayout(segment, segments),
    })


def pack_registers(layout, values):
    """Pack a dict of field values with ``layout`` into a list of 32-bit register words."""
    bits = layout.const(values).as_bits()
    count = -(-layout.size // REGISTER_BITS)
    return [(bits >> (REGISTER_BITS * r)) & 0xFFFF_FFFF for r in range(count)]


def unpack_registers(words):
    """Inverse of :func:`pack_registers`: register words to the raw bit pattern."""
    return sum(w << (REGISTER_BITS * r) for r, w in enumerate(words))
