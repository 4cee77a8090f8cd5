"""The LSTM's view of the data: each user's items in time order, cut into fixed windows.

A user's timeline is their ratings sorted by timestamp, ties broken by item index. A window of
length L ends at the item to predict and holds the L - 1 items before it, left-padded with the
reserved padding index; ratings go alongside (0 where padded).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scoring.bundle import pair_windows

from .dataset import Interactions


@dataclass(frozen=True)
class Windows:
    """Fixed-length item windows with their ratings; the last position is the target."""

    users: np.ndarray
    """User index of each window, int64 [N]."""
    items: np.ndarray
    """Item indices, int64 [N, L], ``pad`` where there is no earlier item."""
    ratings: np.ndarray
    """Ratings on [0, 1], float32 [N, L]; the last column is the target (never fed to the model)."""


def timeline_order(interactions: Interactions) -> np.ndarray:
    """Permutation sorting interactions by user, then timestamp, then item."""
    return np.lexsort((interactions.items, interactions.timestamps, interactions.users))


def training_windows(interactions: Interactions, length: int, pad: int) -> Windows:
    """One window per rating, made of the same user's preceding ratings in ``interactions``."""
    order = timeline_order(interactions)
    users = interactions.users[order]
    items = interactions.items[order]
    unit = interactions.unit[order]
    n = len(order)
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    first_of_user = np.repeat(starts, np.diff(np.r_[starts, n]))
    offsets = np.arange(-(length - 1), 1)
    source = np.arange(n)[:, None] + offsets[None, :]
    valid = source >= first_of_user[:, None]
    source = np.where(valid, source, 0)
    return Windows(users=users,
                   items=np.where(valid, items[source], pad),
                   ratings=np.where(valid, unit[source], 0.0).astype(np.float32))


def latest_history(interactions: Interactions, n_users: int, length: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's most recent ``length`` items and ratings, oldest first, left-padded.

    Returns ``items`` int64 [n_users, length] and ``ratings`` float32 [n_users, length].
    """
    order = timeline_order(interactions)
    users = interactions.users[order]
    items = np.full((n_users, length), pad, dtype=np.int64)
    ratings = np.zeros((n_users, length), dtype=np.float32)
    if length == 0 or len(order) == 0:
        return items, ratings
    ends = np.r_[np.flatnonzero(np.diff(users)) + 1, len(order)]
    rank_from_end = ends[np.searchsorted(ends, np.arange(len(order)), side="right")] - np.arange(len(order))
    keep = rank_from_end <= length
    rows = users[keep]
    cols = length - rank_from_end[keep]
    items[rows, cols] = interactions.items[order][keep]
    ratings[rows, cols] = interactions.unit[order][keep]
    return items, ratings


def windows_for_pairs(history_items: np.ndarray, history_ratings: np.ndarray,
                      users: np.ndarray, items: np.ndarray) -> Windows:
    """Windows predicting ``(users, items)`` from each user's latest history (scoring semantics)."""
    window_items, window_ratings = pair_windows(history_items, history_ratings, users, items)
    return Windows(users=users, items=window_items, ratings=window_ratings)
