"""Give the memory of a finished job back to the operating system.

A job's photo, decoded pixels and mesh arrays are tens to hundreds of megabytes. Python frees them,
but glibc's allocator keeps freed heap pages (in every thread's arena) for reuse, so without a
trim one large photo would leave the worker hundreds of megabytes bigger for the rest of its life.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    """glibc's `malloc_trim`, or None on a C library without it (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_memory() -> None:
    """Collect garbage, then return free heap pages to the system (blocking: run it in a thread)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
