"""How the process holds a large state: glibc's malloc told to keep the memory numpy frees (one
call at the start of a process), and Python's cyclic garbage collector kept off the state.

The collector's oldest generation is collected whenever a quarter more objects have survived into
it, and each such pass walks *every* tracked object: with a book of 1M positions (their wallets,
ids and index rows, about 3M objects) a pass took up to 1.1 s, and book building spent 19 s of its
67 s in 39 of them (measured 2026-12-01, 2M records). The state is long-lived and free of
reference cycles (refcounting frees a closed position or a forgotten id at once), so after each
commit the processor collects the young generations and *freezes* what survived
(:func:`settle`): later passes walk only what is new since the last commit. A task's state that
is dropped (revoked to another instance, or abandoned after a broker outage) is unfrozen and
collected in full once (:func:`release`), so nothing it held stays behind; a processor that stops
unfreezes everything (its state goes with it, in the collector's own time).

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


YOUNG_THRESHOLD = 100_000
"""Tracked objects allocated (net of those freed) that start a young collection while the
processor runs (Python's default: 700)."""


def collect_young_at_commits() -> tuple[int, int, int]:
    """While the processor runs: the young generation collected after :data:`YOUNG_THRESHOLD` more
    tracked objects, not 700, since :func:`settle` collects the young generations after every
    commit anyway. With the default, the state objects a transaction adds (positions, their keys,
    wallets' lists) were walked by a young pass, then by a middle one, then by passes of the oldest
    generation before the commit froze them: building a book of 1M positions spent 2.7 s of 30 s
    collecting, 1.65 s with this (2026-12-01). Cyclic garbage is still collected at every commit,
    and at the latest after this many objects. Returns the thresholds before, to put back."""
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, *before[1:])
    return before


def settle() -> None:
    """After a commit: collect the young generations (what is cyclic garbage by now goes), then
    freeze every object that is left out of later collections."""
    gc.collect(1)
    gc.freeze()


def release() -> None:
    """After a task's state was dropped: unfreeze everything and collect in full (a pass over the
    whole state, once per rebalance or outage, not once per quarter of growth)."""
    gc.unfreeze()
    gc.collect()
