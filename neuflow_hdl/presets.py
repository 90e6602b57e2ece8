"""Grid presets: the one place where named hardware configurations live."""

from dataclasses import dataclass, field, replace

from .numerics import Q8_8, Format

__all__ = ["GridConfig", "PRESETS", "preset", "BoardConfig", "BOARDS", "board"]


@dataclass(frozen=True)
class GridConfig:
    """Parameters of a grid of tiles (and, later, of the processor around it)."""
    rows: int
    columns: int
    globals_: int           #: global stream lines in each direction
    kernel: int             #: K of every convolver
    max_width: int          #: longest image row a convolver's line buffers hold
    segments: int = 8
    fifos: int = 2          #: FIFO-bank FIFOs per tile
    fifo_depth: int = 256
    input_depth: int = 16   #: FIFO on each operator input
    fmt: Format = field(default=Q8_8)
    clock_mhz: float = 100.0  #: nominal grid clock, for frames/s estimates
    ports: int = 4          #: streamer ports
    beat_words: int = 4     #: words per memory-bus beat
    memory_words: int = 1 << 18   #: external memory (words) of the simulation top

    def __post_init__(self):
        for name in ("rows", "columns", "globals_"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 16:
                raise ValueError(f"{name} must be an integer from 1 to 16, not {value!r}")
        if self.rows * self.columns > 254:
            raise ValueError(f"a grid holds at most 254 tiles, not {self.rows * self.columns}")

    @property
    def tiles(self):
        return self.rows * self.columns

    @property
    def convolver_macs(self):
        """Multiply-accumulates a cycle of every convolver: K*K per tile."""
        return self.tiles * self.kernel * self.kernel

    @property
    def multipliers(self):
        """Multipliers: K*K per convolver plus one in each ALU and mapper."""
        return self.convolver_macs + 2 * self.tiles


PRESETS = {
    # Fast tests: four small tiles.
    "tiny": GridConfig(rows=2, columns=2, globals_=4, kernel=7, max_width=64, fifo_depth=32,
                       clock_mhz=100.0),
    # Sized to the ECP5-85F: 3 x (49 + 2) = 153 of its 156 MULT18X18D.  Its clock is the
    # routed grid's median fmax over three placer seeds (84.2 / 86.9 / 92.3 MHz, measured
    # with nextpnr-ecp5 at 9fdedbc; docs/architecture.md,
    # "FPGA figures").
    "ulx3s-85f": GridConfig(rows=1, columns=3, globals_=4, kernel=7, max_width=512,
                            fifo_depth=512, clock_mhz=86.9),
    # NeuFlow's MAC budget (680 on the Virtex-6) for performance studies: 14 convolvers of
    # 7 x 7 = 686 MACs, which 7 x 7 kernels fill (NeuFlow padded them into 10 x 10 slots).
    # 16 ports and lines let one pass chain all 14 tiles; 16-word beats (256-bit bus).
    # 256 M words (512 MB) of external memory, as NeuFlow's boards had hundreds of MB
    # of DDR: VGG-19's 144 M weights fit with its tensors and program.
    "neuflow-v6": GridConfig(rows=2, columns=7, globals_=16, kernel=7, max_width=1024,
                             fifo_depth=1024, clock_mhz=200.0, ports=16, beat_words=16,
                             memory_words=1 << 28),
}


def preset(name):
    """The named :class:`GridConfig`; ``ValueError`` naming the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown grid preset {name!r}; known: {', '.join(PRESETS)}") from None


@dataclass(frozen=True)
class BoardConfig:
    """A board: the grid preset it carries, its memory, clock and host link."""
    name: str
    grid: str               #: the grid preset
    memory_words: int       #: on-chip memory (block RAM) in words: a power of two
    clock_mhz: float        #: the grid's clock, from the board's oscillator through a PLL
    oscillator_mhz: float
    baud: int               #: the host link's line rate
    sim_divisor: int = 8    #: clock cycles a bit in the Verilator board model (a faster line)

    @property
    def config(self):
        """The :class:`GridConfig` of the board's processor."""
        return replace(preset(self.grid), memory_words=self.memory_words, clock_mhz=self.clock_mhz)

    @property
    def divisor(self):
        """Clock cycles a bit on the board's serial line."""
        return round(self.clock_mhz * 1e6 / self.baud)


BOARDS = {
    # The ECP5-85F's 208 DP16KD hold 3.3 Mbit; the grid takes 24 of them, 128 more hold
    # 2^17 16-bit words (the largest power of two that fits).  The clock is the board's
    # 25 MHz oscillator through the PLL (x 1): the routed board top's measured fmax fell from
    # 35.0 MHz (9359aa2, seed 1) to 27.5 MHz (e61a695, seed 1, routed against 30 MHz) as the
    # grid gained pipeline registers for its own clock; docs/architecture.md has every run.
    # It is a whole number of cycles a bit of the 1 Mbaud line (the FT231X on the board's
    # USB port takes up to 3 Mbaud).
    "ulx3s-85f": BoardConfig(name="ulx3s-85f", grid="ulx3s-85f", memory_words=1 << 17, clock_mhz=25.0,
                             oscillator_mhz=25.0, baud=1_000_000),
}


def board(name):
    """The named :class:`BoardConfig`; ``ValueError`` naming the known ones otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known: {', '.join(BOARDS)}") from None
