"""Hand free heap memory back to the operating system after a large allocation burst.

glibc's malloc keeps memory a process freed in its heaps for reuse; after a burst of many
objects (a large API page) the free space sits between a few long-lived allocations and the
resident size ratchets up request after request although Python's own memory stays flat.
`malloc_trim(0)` returns every free page of every heap. It costs a pass over the heap (well
under a millisecond at the sizes here); call it after a burst, not per request.

A no-op where the C library has no malloc_trim (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load_trim()


def release_free_memory() -> None:
    """Return the heap's free pages to the system (glibc); nothing elsewhere."""
    if _TRIM is not None:
        _TRIM(0)
