"""Memory image files: one word per line in hexadecimal, the format the
simulation memory loads (``$readmemh``) and dumps at halt (``$writememh``)."""

from pathlib import Path

import numpy as np

__all__ = ["read_hex", "write_hex"]


def write_hex(path, words, width=16):
    """Write ``words`` (integers; the low ``width`` bits of each) to ``path``."""
    digits = -(-width // 4)
    mask = (1 << width) - 1
    dtype = {2: ">u1", 4: ">u2", 8: ">u4"}.get(digits)
    if dtype is None:
        Path(path).write_text("".join(f"{int(w) & mask:0{digits}x}\n" for w in words))
        return
    values = (np.asarray(words, dtype=np.int64) & mask).astype(dtype)
    lines = np.frombuffer(values.tobytes().hex().encode(), dtype=f"S{digits}")
    Path(path).write_bytes(b"\n".join(lines) + b"\n" if len(lines) else b"")


def read_hex(path, count):
    """The first ``count`` words of a hex file (``//`` comments skipped), zero-filled."""
    words = np.zeros(count, dtype=np.int64)
    values = [int(line, 16) for line in Path(path).read_text().split() if not line.startswith("//")]
    words[:len(values)] = values[:count]
    return words
