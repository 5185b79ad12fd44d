"""The process's malloc keeps what numpy frees (adl_stream/runtime/memory.py)."""

import ctypes
import ctypes.util
import sys

from adl_stream.runtime.memory import keep_freed_memory


def test_the_thresholds_are_set_on_glibc():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    glibc = sys.platform.startswith("linux") and hasattr(libc, "gnu_get_libc_version")
    assert keep_freed_memory() is glibc
