"""How the process holds a large state: glibc's malloc told to keep the memory numpy frees (one
call at the start of a process), and the garbage collector kept out of a bulk restore.

glibc serves a large allocation (above its mmap threshold) with a fresh ``mmap`` and returns the
heap's free top to the system (above its trim threshold); both thresholds move with the sizes the
process happened to free before. A decision over a side of 500k positions makes a few dozen
temporary columns of 4 MB: served by fresh mappings, each page of each is faulted in again at every
decision, and a 1M-position decision took 20 ms instead of 6 (measured 2026-12-01, README "Lean
positions"). Fixing the thresholds (mmap above 32 MiB only, trim above 256 MiB of free top) keeps
the freed columns in the heap for the next decision; resident memory stays at its high-water mark.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Iterator

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Set the thresholds; False where the C library is not glibc (nothing is changed there)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


@contextlib.contextmanager
def restoring() -> Iterator[None]:
    """Around a restore that creates millions of objects: no cyclic garbage collection meanwhile
    (each generation-2 pass would walk every object made so far: a restore of 1M positions took
    twice as long with it), and the objects made are then frozen out of later collections (they
    are the state, long-lived by nature; refcounting still frees each one that is dropped)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.freeze()
