"""Keep the C heap's pages resident while training runs, and hand the free ones back to the
operating system every so often.

Training allocates tensors of a different size every batch (the LSTM's distinct histories, the
rows each batch touches). Left to its defaults, glibc's malloc moves its mmap threshold as large
blocks are freed and trims the top of the heap whenever 64 MB of it is free: freed pages go back
to the kernel and the next batch faults them in again, zero-filled. ``keep_heap_resident``
fixes the threshold at glibc's ceiling and lets the heap keep its free top, so steps reuse warm
pages; ``release_free_memory`` returns the free pages now and then, so resident memory stays
near what training holds, not what it once held (docs/performance.md). Where the C library is not glibc, both do nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util

TRIM_EVERY_STEPS = 256
"""Training steps between two returns of free heap memory: rare enough that re-faulting the
returned pages costs nothing measurable, often enough that memory does not creep up."""

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
"""glibc's ``mallopt`` parameter numbers (malloc.h)."""

HEAP_SETTINGS = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 256 << 20}
"""Blocks of 32 MiB and more are mapped on their own (glibc's largest threshold, where its
sliding one ends up anyway); up to 1 GiB of free heap top is kept, and 256 MiB more is taken
whenever the heap grows, instead of returning and re-faulting pages every batch."""


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def keep_heap_resident() -> bool:
    """Set ``HEAP_SETTINGS`` for this process (idempotent); whether the C library took them."""
    if _LIBC is None:
        return False
    return all(_LIBC.mallopt(ctypes.c_int(parameter), ctypes.c_int(value)) == 1
               for parameter, value in HEAP_SETTINGS.items())


def release_free_memory() -> bool:
    """Return the heap's free pages to the operating system; whether the C library could."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(ctypes.c_size_t(0))
    return True
