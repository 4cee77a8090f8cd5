"""Recency for the implicit ranking fit: how many of a user's interactions come after each one,
the weight that gives recent interactions, and each user's latest interactions held out to choose
how much it counts.

What a user did last says most about what they do next: a nightly job's lists are judged on the
next day's interactions, and the evaluation's temporal protocol on each user's latest 20%. An
interaction with ``later`` interactions of the same user after it weighs
``1 + recency_weight * exp(-later / window)``; ``recency_weight`` is chosen from
``RECENCY_WEIGHTS`` per run, on each user's latest ``HOLDOUT`` of the training interactions:
data without an order gets 0, and data whose order says nothing should.
"""
from __future__ import annotations

import numpy as np

from ..data.dataset import Interactions

RECENCY_WEIGHTS = (0.0, 1.0, 3.0, 10.0)
"""The recency weights the ranking fit chooses from (0: every interaction alike)."""
HOLDOUT = 0.1
"""Share of each user's training interactions, the latest, that the choice is judged on."""


def later_counts(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """For each interaction, how many of the same user's interactions have a later timestamp (0:
    the user's latest; interactions at the same time share a count)."""
    if not len(users):
        return np.zeros(0, np.int64)
    _, times = np.unique(timestamps, return_inverse=True)
    keys = users.astype(np.int64) * (int(times.max()) + 1) + times
    ordered = np.sort(keys)
    user_end = np.searchsorted(ordered, (users.astype(np.int64) + 1) * (int(times.max()) + 1), side="left")
    return user_end - np.searchsorted(ordered, keys, side="right")


def recency_weights(ratings: Interactions, weight: float, window: float) -> np.ndarray:
    """Each interaction's recency weight, ``1 + weight * exp(-later / window)``; ones where
    ``weight`` is 0."""
    if not weight:
        return np.ones(len(ratings))
    return 1.0 + weight * np.exp(-later_counts(ratings.users, ratings.timestamps) / window)


def has_order(ratings: Interactions) -> bool:
    """Whether the interactions have an order to weigh by (not every timestamp the same)."""
    return len(ratings) > 0 and bool(ratings.timestamps.min() != ratings.timestamps.max())


def latest_split(ratings: Interactions) -> tuple[Interactions, Interactions]:
    """``ratings`` less each user's latest ``HOLDOUT`` (rounded down: users with fewer than
    ``1 / HOLDOUT`` interactions keep all theirs), and those latest interactions."""
    later = later_counts(ratings.users, ratings.timestamps)
    counts = np.bincount(ratings.users)[ratings.users]
    held = later < np.floor(HOLDOUT * counts)
    return ratings.take(np.flatnonzero(~held)), ratings.take(np.flatnonzero(held))
