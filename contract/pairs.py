"""How every user-item pair is walked: user ranges for the all-items graphs, flat pair batches
for the pairwise graphs. Both orders are user-major, items ascending."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def user_ranges(n_users: int, n_items: int, chunk_pairs: int) -> list[tuple[int, int]]:
    """``[start, stop)`` user ranges of about ``chunk_pairs`` pairs each (at least one user)."""
    size = max(1, chunk_pairs // max(n_items, 1))
    return [(s, min(s + size, n_users)) for s in range(0, n_users, size)]


def pair_batches(n_users: int, n_items: int, batch_pairs: int,
                 limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(user indices, item indices) int64 of every pair, or of the first ``limit`` pairs, in
    batches of ``batch_pairs``."""
    total = n_users * n_items if limit is None else min(limit, n_users * n_items)
    for start in range(0, total, batch_pairs):
        users, items = np.divmod(np.arange(start, min(start + batch_pairs, total), dtype=np.int64), n_items)
        yield users, items
