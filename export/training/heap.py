"""Hand the C heap's free pages back to the operating system during training.

Training allocates tensors of a different size every batch (the LSTM's distinct histories, the
rows each batch touches). glibc's malloc serves blocks below its mmap threshold (which grows to
32 MB after large frees) from the heap, and keeps freed heap pages: over an epoch the process's
resident memory then grows by gigabytes of memory it no longer uses. ``malloc_trim(0)`` returns
the free pages; calling it every few batches costs nothing measurable (docs/performance.md).
Where the C library has no ``malloc_trim`` (not glibc), this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_EVERY_STEPS = 16
"""Training steps between two returns of free heap memory."""


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)
    except OSError:
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return the heap's free pages to the operating system; whether the C library could."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
