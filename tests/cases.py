"""Random test cases shared by the Amaranth-simulator tests and the cocotb
benches, each paired with the numpy reference's answer."""

import numpy as np

from neuflow_hdl.isa import table_entry
from neuflow_hdl.numerics import Q8_8
from neuflow_hdl.regs import ConvMode, Symmetry
from sim.golden import reference

EXTREMES = [Q8_8.min, Q8_8.min + 1, -257, -256, -1, 0, 1, 255, 256, Q8_8.max - 1, Q8_8.max]


def conv_job(rng, kernel, max_width, *, k=None, stride=None, mode=None, width=None, height=None,
             extreme=False, max_height=8):
    """A random convolver job: (config, image, weights, partial sums)."""
    k = k or int(rng.integers(1, kernel + 1))
    stride = stride or int(rng.integers(1, 4))
    mode = mode or [ConvMode.MAC, ConvMode.MAC_PSUM, ConvMode.MAX][rng.integers(3)]
    width = width or int(rng.integers(k, max_width + 1))
    height = height or int(rng.integers(k, max(k, max_height) + 1))
    if extreme:
        image = rng.choice(EXTREMES, size=(height, width))
        weights = rng.choice(EXTREMES, size=(k, k))
        bias = int(rng.integers(-(1 << 31), 1 << 31))
    else:
        image = rng.integers(-600, 600, size=(height, width))
        weights = rng.integers(-600, 600, size=(k, k))
        bias = int(rng.integers(-5000, 5000))
    cfg = {"width": width, "height": height, "k": k, "stride": stride, "mode": mode,
           "shift": int(rng.integers(0, Q8_8.width + 1)), "bias": bias}
    oh, ow = reference.output_size(height, k, stride), reference.output_size(width, k, stride)
    psum = rng.integers(Q8_8.min, Q8_8.max + 1, size=(oh, ow))
    return cfg, image, weights, psum


def conv_expected(cfg, image, weights, psum):
    if cfg["mode"] is ConvMode.MAX:
        return reference.window_max(image, cfg["k"], stride=cfg["stride"])
    return reference.conv2d(image, weights, stride=cfg["stride"], bias=cfg["bias"],
                            shift=cfg["shift"],
                            psum=psum if cfg["mode"] is ConvMode.MAC_PSUM else None)


def frame_flags(shape):
    """The (eol, eof) flags of a row-major frame."""
    h, w = shape
    return [(int(c == w - 1), int(c == w - 1 and r == h - 1)) for r in range(h) for c in range(w)]


def alu_operands(rng, n):
    """Random words with the extremes mixed in (saturation, division by zero)."""
    a = rng.integers(Q8_8.min, Q8_8.max + 1, n)
    b = rng.integers(Q8_8.min, Q8_8.max + 1, n)
    for x in (a, b):
        pick = rng.random(n) < 0.25
        x[pick] = rng.choice(EXTREMES, pick.sum())
    return a, b


def mapper_segments(rng, symmetry, segments=8):
    """Random bounds (sorted or not: the highest matching index wins), slopes, offsets."""
    lo = 0 if symmetry is not Symmetry.NONE else Q8_8.min
    bounds = np.sort(rng.integers(lo, Q8_8.max, segments))
    if rng.random() < 0.5:
        bounds = rng.integers(Q8_8.min, Q8_8.max, segments)
    return (bounds, rng.integers(Q8_8.min, Q8_8.max + 1, segments),
            rng.integers(Q8_8.min, Q8_8.max + 1, segments))


def mapper_config(symmetry, shift, bounds, slopes, offsets):
    return {"symmetry": symmetry, "shift": shift,
            "segments": [{"bound": int(b), "slope": int(a), "offset": int(c)}
                         for b, a, c in zip(bounds, slopes, offsets)]}


# -- Control-CPU programs -------------------------------------------------------

DATA, RESULTS = 0x400, 0x600         # word addresses used by random programs


def config_read_value(address):
    """What the test configuration bus answers for a read of ``address``."""
    return (address * 2654435761 + 12345) & 0xFFFF_FFFF


def random_program(rng, length=60):
    """Assembly text of a random program that always halts: forward branches,
    one counted backward loop, loads/stores in a data area (r15 holds its
    base), configuration reads and writes; it stores r0..r14 at RESULTS."""
    lines = [f"li r15, {DATA}", f"li r14, {RESULTS}"]
    ops3 = ["add", "sub", "and", "or"]
    label = 0

    def reg(limit=14):
        return f"r{int(rng.integers(0, limit))}"

    for n in range(length):
        kind = rng.integers(0, 12)
        if kind == 0:
            lines.append(f"li {reg()}, {int(rng.integers(-(1 << 31), 1 << 32))}")
        elif kind == 1:
            lines.append(f"{rng.choice(ops3)} {reg()}, {reg()}, {reg()}")
        elif kind == 2:
            lines.append(f"addi {reg()}, {reg()}, {int(rng.integers(-1000, 1000))}")
        elif kind == 3:
            lines.append(f"{rng.choice(['shr', 'shl'])} {reg()}, {reg()}, {int(rng.integers(0, 40))}")
        elif kind == 4:
            lines.append(f"{rng.choice(['ld', 'st'])} {reg()}, {2 * int(rng.integers(0, 64))}(r15)")
        elif kind == 5:
            lines.append(f"cfgw {reg()}, {int(rng.integers(0, 1 << 20))}")
        elif kind == 6:
            lines.append(f"cfgwi {int(rng.integers(0, 1 << 20))}, {int(rng.integers(0, 1 << 32))}")
        elif kind == 7:
            lines.append(f"cfgr {reg()}, {int(rng.integers(0, 1 << 20))}")
        elif kind == 8:
            skip = f"skip{label}"
            label += 1
            lines.append(f"{rng.choice(['beq', 'bne', 'blt'])} {reg()}, {reg()}, {skip}")
            lines.append(f"addi {reg()}, {reg()}, 1")
            lines.append(f"{skip}:")
        elif kind == 9:
            lines.append("nop")
        elif kind == 10:
            lines.append(f"wait 0x00, 0x00, {int(rng.integers(0, 1 << 20))}")   # always true
        else:                   # a cfgwt table of 1-3 entries (some skipped) stored at r15 + offset
            offset = 4 * int(rng.integers(0, 28))
            count = int(rng.integers(1, 4))
            for k in range(count):
                entry = table_entry(int(rng.integers(0, 1 << 20)), int(rng.integers(0, 1 << 32)),
                                    last=k == count - 1, skip=bool(rng.integers(0, 4) == 0))
                for half in range(2):
                    lines += [f"li r13, {entry >> 32 * half & 0xFFFF_FFFF}",
                              f"st r13, {offset + 4 * k + 2 * half}(r15)"]
            lines += [f"addi r13, r15, {offset}", "cfgwt r13"]
    lines += ["li r13, 5", "li r12, 0", "again: addi r12, r12, 7", "addi r13, r13, -1",
              "li r11, 0", "bne r13, r11, again"]
    lines += [f"st r{n}, {2 * n}(r14)" for n in range(15)]
    lines.append(f"halt {int(rng.integers(0, 1 << 16))}")
    return "\n".join(lines)
