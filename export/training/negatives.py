"""Sampled non-interactions for implicit feedback: the pairs a rating output is judged against
when every observed pair is a positive."""
from __future__ import annotations

import numpy as np

from ..data.dataset import Interactions


def with_negatives(positives: Interactions, known: Interactions, n_items: int,
                   rng: np.random.Generator) -> Interactions:
    """``positives`` followed by one sampled non-interaction per positive: the same user, an item
    drawn uniformly among those neither set holds for the user (redrawn up to a few times; a user
    who has nearly every item may keep a known one), rating 0, the positive's time."""
    width = np.int64(n_items)
    taken = np.unique(np.concatenate([known.users, positives.users]).astype(np.int64) * width
                      + np.concatenate([known.items, positives.items]))
    items = rng.integers(0, n_items, len(positives))
    for _ in range(8):
        clash = np.isin(positives.users.astype(np.int64) * width + items, taken, assume_unique=False)
        if not clash.any():
            break
        items[clash] = rng.integers(0, n_items, int(clash.sum()))
    negatives = Interactions(positives.users, items.astype(positives.items.dtype),
                             np.zeros(len(positives), np.float32), positives.timestamps, positives.scale)
    return positives.concat(negatives)
