"""The numeric contract: the one home of every rule about numbers in NeuFlow.

Streams carry signed two's-complement fixed-point words of ``width`` bits with
``frac`` fraction bits (default 16-bit Q8.8, as the original NeuFlow).  The
rules, used identically by the gateware (through the ``hdl_*`` helpers), the
numpy reference (:mod:`sim.golden.reference`) and the compiler:

* products and sums are exact in a wide accumulator (:func:`accumulator_width`)
  that no kernel of the largest supported size can overflow;
* every narrowing rounds half up: add ``2**(s-1)``, arithmetic shift right by
  ``s`` (:func:`round_shift`), then saturates to the word range
  (:func:`saturate`); nothing ever wraps around;
* an operator's output shift ``s`` (``0 <= s <= width``) is chosen per layer so
  a layer may pick its own output format.

See ``docs/numerics.md`` for the prose version; both must agree.
"""

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Const, Mux, Signal, signed, Shape, Value

__all__ = [
    "Format", "Q8_8", "round_shift", "saturate", "narrow", "accumulator_width",
    "bits_for", "div_round", "wrap_signed", "unsigned_words", "hdl_saturate", "hdl_narrow_stages", "NARROW_STAGES",
    "hdl_half",
]


def bits_for(n):
    """Bits of an unsigned number that holds ``0 .. n``."""
    return max(int(n).bit_length(), 1)


#: Values :meth:`Format.quantise` rounds at a time in a large array (its float
#: scratch stays in the cache).
QUANTISE_CHUNK = 1 << 16


@dataclass(frozen=True)
class Format:
    """A signed fixed-point word format: ``width`` bits, ``frac`` of them fraction."""

    width: int = 16
    frac: int = 8

    def __post_init__(self):
        if not isinstance(self.width, int) or not 2 <= self.width <= 32:
            raise ValueError(f"word width must be an integer from 2 to 32, not {self.width!r}")
        if not isinstance(self.frac, int) or not 0 <= self.frac < self.width:
            raise ValueError(f"fraction bits must be an integer from 0 to width-1 "
                             f"({self.width - 1}), not {self.frac!r}")

    @property
    def min(self):
        """Smallest word, as an integer code."""
        return -(1 << (self.width - 1))

    @property
    def max(self):
        """Largest word, as an integer code."""
        return (1 << (self.width - 1)) - 1

    @property
    def shape(self):
        return signed(self.width)

    @property
    def step(self):
        return 2.0 ** -self.frac

    def _rounded(self, x, frac):
        """``floor(x * 2**frac + 0.5)`` as a new float array, computed in place
        (networks have hundreds of millions of weights)."""
        frac = self.frac if frac is None else frac
        rounded = np.array(x, dtype=np.float64)
        rounded *= 2.0 ** frac
        rounded += 0.5
        return np.floor(rounded, out=rounded)

    def quantise(self, x, frac=None):
        """Float to integer codes: ``floor(x * 2**frac + 0.5)``, saturated (the one
        rounding rule for inputs, weights and mapper coefficients; ``frac`` may
        be negative).  A large array is rounded :data:`QUANTISE_CHUNK` values at
        a time into the codes (no float copy of a network's weights)."""
        x = np.asarray(x)
        if x.size <= QUANTISE_CHUNK:
            rounded = self._rounded(x, frac)
            return np.clip(rounded, self.min, self.max, out=rounded).astype(np.int64)[()]
        flat = np.ascontiguousarray(x).reshape(-1)
        codes = np.empty(flat.shape, dtype=np.int64)
        for start in range(0, flat.size, QUANTISE_CHUNK):
            part = self._rounded(flat[start:start + QUANTISE_CHUNK], frac)
            codes[start:start + QUANTISE_CHUNK] = np.clip(part, self.min, self.max, out=part)
        return codes.reshape(x.shape)

    def saturated(self, x, frac=None):
        """Where :meth:`quantise` saturates ``x``: its rounded code lies outside the words."""
        codes = self._rounded(x, frac)
        return (codes < self.min) | (codes > self.max)

    def span(self, frac=None):
        """The format's range in real units at ``frac`` fraction bits: every value
        it holds lies in ``[-span, span)``."""
        return -self.min * 2.0 ** -(self.frac if frac is None else frac)

    def dequantise(self, codes, frac=None):
        """Integer codes to float."""
        frac = self.frac if frac is None else frac
        return np.asarray(codes, dtype=np.float64) * 2.0 ** -frac

    def saturate(self, x):
        return saturate(x, self.width)


Q8_8 = Format(16, 8)


def round_shift(x, shift):
    """Round half up while shifting right by ``shift`` bits (exact integers)."""
    x = np.asarray(x, dtype=np.int64) if not isinstance(x, int) else x
    if shift < 0:
        raise ValueError(f"shift must be >= 0, not {shift}")
    if shift == 0:
        return x
    return (x + (1 << (shift - 1))) >> shift


def unsigned_words(codes, width):
    """Signed codes as the unsigned ``width``-bit words memory holds (two's
    complement): the inverse of :func:`wrap_signed`."""
    return np.asarray(codes, dtype=np.int64) & ((1 << width) - 1)


def wrap_signed(words, width):
    """Low ``width`` bits of integers (memory words, register fields) read as signed codes."""
    half = 1 << (width - 1)
    return ((np.asarray(words, dtype=np.int64) + half) & ((1 << width) - 1)) - half


def saturate(x, width):
    """Clamp to the signed ``width``-bit range; never wrap."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if isinstance(x, int):
        return min(max(x, lo), hi)
    return np.clip(x, lo, hi)


def narrow(x, shift, width):
    """The one narrowing rule: round half up by ``shift``, then saturate."""
    return saturate(round_shift(x, shift), width)


def div_round(a, b, shift, width):
    """``a * 2**shift / b`` rounded half up and saturated; the StreamALU's DIV.

    Division by zero saturates toward the sign of the dividend: a positive
    dividend gives the largest word, a negative one the smallest, zero gives 0.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.broadcast_to(np.asarray(b, dtype=np.int64), a.shape)
    neg = (a < 0) != (b < 0)
    num = np.abs(a) << shift
    den = np.abs(b)
    safe = np.where(den == 0, 1, den)
    # Half up for the signed quotient: floor((2n + d - neg) / 2d) on magnitudes.
    q = (2 * num + safe - neg) // (2 * safe)
    q = np.where(neg, -q, q)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    q = np.where(den == 0, np.where(a > 0, hi, np.where(a < 0, lo, 0)), q)
    return saturate(q, width)


def accumulator_width(width, kernel):
    """Accumulator bits for a ``kernel`` x ``kernel`` convolution of ``width``-bit words.

    It holds the sum of ``kernel**2`` full products, a 32-bit bias and a
    partial sum shifted left by up to ``width`` bits with no possibility of
    overflow.
    """
    return max(2 * width, 32) + bits_for(kernel * kernel + 2)


# -- Gateware helpers: the same rules as Amaranth expressions -----------------

def hdl_saturate(value, width):
    """Saturate a signed Amaranth value to ``width`` bits (combinational)."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    value = Value.cast(value)
    if Shape.cast(value.shape()).width <= width:
        return value.as_signed() if value.shape().signed else value
    return Mux(value > hi, hi, Mux(value < lo, lo, value))[:width].as_signed()


#: Registered stages of :func:`hdl_narrow_stages`.
NARROW_STAGES = 3


def hdl_narrow_stages(m, value, shift, max_shift, width, name):
    """The narrowing of a signed ``value`` by a run-time ``shift`` (0 ..
    ``max_shift``) to ``width`` bits, round half up and saturate, as
    :data:`NARROW_STAGES` registers of the ``sync`` domain added to ``m``: the
    rounding increment (one bit wider, so it never overflows), the shift, the
    saturation.  Returns the last register."""
    value = Value.cast(value)
    biased = Signal(signed(len(value) + 1), name=f"{name}_biased", reset_less=True)
    shifted = Signal(signed(len(value) + 1), name=f"{name}_shifted", reset_less=True)
    narrowed = Signal(signed(width), name=name, reset_less=True)
    m.d.sync += [biased.eq(value + hdl_half(shift, max_shift)), shifted.eq(biased >> shift),
                 narrowed.eq(hdl_saturate(shifted, width))]
    return narrowed


def hdl_half(shift, max_shift):
    """The rounding increment of a run-time ``shift``: ``2**(shift-1)``, 0 for no shift."""
    return (Const(1, max_shift + 1) << shift)[1:max_shift + 1]
