"""How the compiling process runs: :func:`compiling` holds, for the length of a
compile, Python's cycle collector off and the C heap's freed memory for reuse.

Both are process-wide settings, restored when the outermost compile ends.  A
compile makes millions of small objects that reference counting frees; the
cycle collector would scan the ones alive again and again as they grow in
number and find nothing to free (37 % of ResNet-50's compile, 359 s with it
and 225 s without, measured at 6556ee6).  And it makes and frees arrays of
hundreds of megabytes (a network's weights in float64, their codes, the memory
image): glibc maps each such block afresh and unmaps it when freed, so the
next one faults in and zeroes new pages, which on a virtual machine whose
memory is not yet backed costs seconds per gigabyte.  With mapping off and
trimming deferred, freed blocks are reused: measured back to back against
3807107 on this project's 2-core machine, AlexNet 15.5-18.6 s to 9.1-11.7 s,
ZFNet-512 20.4 s to 15.3 s (peak memory 4.3 to 5.6 GB), VGG-19 51.1 s to
36.9 s (7.4 to 7.6 GB).  When the compile ends, the free memory is given back
(``malloc_trim``), and the objects the compile leaves alive join the
collector's oldest generation unscanned.  Without glibc the heap is left as it is.
"""

import ctypes
import ctypes.util
import gc
import platform
import threading
from contextlib import contextmanager

__all__ = ["compiling"]

#: glibc's mallopt parameters and their defaults (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
#: Trimming deferred: free memory at the heap's top up to this stays.
_KEEP = 2 ** 31 - 1

_lock = threading.Lock()
_depth = 0                  #: compiles running
_collector_was_on = False   #: the cycle collector's state before the first of them


def _glibc():
    """The C library when it is glibc (with ``mallopt`` and ``malloc_trim``), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def _begin():
    global _collector_was_on
    _collector_was_on = gc.isenabled()
    gc.disable()
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_MAX, 0)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, _KEEP)


def _end():
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        _LIBC.malloc_trim(0)
    if _collector_was_on:
        # Everything made while the collector was off is in the youngest
        # generation, so the first collection after it is back on would scan
        # the compile's whole result (0.35 s of SqueezeNet's 8.7 s, 1.8 M
        # objects).  Freezing and unfreezing moves those objects into the
        # oldest generation without a scan: they are treated as the long-lived
        # objects they are, and a full collection still finds their cycles.
        gc.freeze()
        gc.unfreeze()
        gc.enable()


@contextmanager
def compiling():
    """The cycle collector off and freed heap memory kept for reuse while the
    block runs (nested and concurrent compiles share one setting; the
    outermost restores it)."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            _begin()
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _end()
