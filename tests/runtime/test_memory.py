"""The process's malloc keeps what numpy frees (adl_stream/runtime/memory.py)."""

import ctypes
import ctypes.util
import sys

from adl_stream.runtime.memory import keep_freed_memory


def test_the_thresholds_are_set_on_glibc():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    glibc = sys.platform.startswith("linux") and hasattr(libc, "gnu_get_libc_version")
    assert keep_freed_memory() is glibc


def test_settle_freezes_what_survives_and_collects_young_cycles_first():
    import gc
    import weakref

    from adl_stream.runtime.memory import release, settle

    class Node:
        pass

    kept, cycle = Node(), Node()
    cycle.self = cycle  # cyclic garbage once dropped: settle must collect it, not freeze it
    gone = weakref.ref(cycle)
    del cycle
    try:
        settle()
        assert gone() is None
        assert gc.get_freeze_count() > 0 and gc.is_tracked(kept)
        frozen_cycle = Node()
        frozen_cycle.self = frozen_cycle
        settle()  # frozen while alive, dropped later: only release() finds it
        ref = weakref.ref(frozen_cycle)
        del frozen_cycle
        gc.collect()
        assert ref() is not None
        release()
        assert ref() is None and gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_young_collections_wait_for_the_commits_and_the_thresholds_go_back():
    import gc

    from adl_stream.runtime.memory import YOUNG_THRESHOLD, collect_young_at_commits

    before = gc.get_threshold()
    returned = collect_young_at_commits()
    try:
        assert returned == before
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.set_threshold(*returned)
    assert gc.get_threshold() == before
