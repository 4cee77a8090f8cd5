"""Top-N selection: unseen items only, best unclipped score first, ties to the smaller item id."""
from __future__ import annotations

import numpy as np


def mask_seen(scores: np.ndarray, indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Copy of ``scores`` [B, n_items] with each row's seen items set to -inf.

    ``indptr`` [B + 1] and ``items`` are the rows' CSR history, ``indptr`` starting at 0.
    """
    masked = scores.copy()
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    masked[rows, items] = -np.inf
    return masked


def top_n(masked: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` columns of each row of ``masked`` (seen items already at -inf).

    Returns ``items`` int64 [B, n'] with ``n' = min(n, n_items)`` and ``valid`` bool [B, n']:
    False where a row has fewer than ``n'`` unseen items. Ordered by score descending, equal
    scores by smaller column index, which is the smaller raw item id. NaN must not occur here.
    """
    rows, n_items = masked.shape
    k = min(n, n_items)
    if rows == 0 or k == 0:
        return np.empty((rows, k), np.int64), np.zeros((rows, k), bool)
    if k < n_items:
        candidates = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(n_items), (rows, n_items)).copy()
    values = np.take_along_axis(masked, candidates, axis=1)
    order = np.lexsort((candidates, -values), axis=1)
    chosen = np.take_along_axis(candidates, order, axis=1)
    if k < n_items:
        # argpartition picks arbitrarily among items tied with the k-th score: redo those rows exactly.
        kth = np.take_along_axis(values, order[:, -1:], axis=1)
        tied_rows = np.flatnonzero((masked >= kth).sum(axis=1) > k)
        for r in tied_rows:
            cand = np.flatnonzero(masked[r] >= kth[r, 0])
            chosen[r] = cand[np.lexsort((cand, -masked[r, cand]))][:k]
    valid = np.isfinite(np.take_along_axis(masked, chosen, axis=1))
    return chosen.astype(np.int64), valid
