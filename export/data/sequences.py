"""The LSTM's view of the data: each user's items in time order, cut into fixed windows.

A user's timeline is their ratings sorted by timestamp, ties broken by item index. A window of
length L ends at the item to predict and holds L - 1 items of the same user as its context, in
time order, left-padded with the reserved padding index; ratings go alongside (0 where padded).
The scoring job's context for every pair is the user's latest L - 1 ratings; training windows
take either that context (``latest_context_windows``) or the ratings just before each one in
time (``preceding_windows``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scoring.feeds import UserContext

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
    histories: np.ndarray
    """Label of each window's history, int64 [N]: windows with equal labels have the same user
    and the same first L - 1 items and ratings (so the LSTM can run over a shared history once)."""


def timeline_order(interactions: Interactions) -> np.ndarray:
    """Permutation sorting interactions by user, then timestamp, then item."""
    return np.lexsort((interactions.items, interactions.timestamps, interactions.users))


def _rank_from_end(sorted_users: np.ndarray) -> np.ndarray:
    """For rows sorted by user then time: 1 for each user's latest row, 2 for the one before..."""
    n = len(sorted_users)
    ends = np.r_[np.flatnonzero(np.diff(sorted_users)) + 1, n]
    rows = np.arange(n)
    return ends[np.searchsorted(ends, rows, side="right")] - rows


def preceding_windows(interactions: Interactions, length: int, pad: int) -> Windows:
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
                   ratings=np.where(valid, unit[source], 0.0).astype(np.float32),
                   histories=np.arange(n, dtype=np.int64))


def latest_history(interactions: Interactions, n_users: int, length: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's most recent ``length`` items and ratings, oldest first, left-padded.

    Returns ``items`` int64 [n_users, length] and ``ratings`` float32 [n_users, length].
    """
    order = timeline_order(interactions)
    users = interactions.users[order]
    return _latest(users, interactions.items[order], interactions.unit[order], _rank_from_end(users),
                   n_users, length, pad)


def _latest(users: np.ndarray, items: np.ndarray, unit: np.ndarray, rank_from_end: np.ndarray,
            n_users: int, length: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """``latest_history`` of rows already in timeline order, with their ``_rank_from_end``."""
    latest_items = np.full((n_users, length), pad, dtype=np.int64)
    latest_ratings = np.zeros((n_users, length), dtype=np.float32)
    keep = rank_from_end <= length
    cols = length - rank_from_end[keep]
    latest_items[users[keep], cols] = items[keep]
    latest_ratings[users[keep], cols] = unit[keep]
    return latest_items, latest_ratings


def latest_context_windows(interactions: Interactions, length: int, pad: int) -> Windows:
    """One window per rating in the context the scoring job gives a pair: the same user's latest
    ``length - 1`` other ratings (oldest first, left-padded), then the rating itself.

    A rating among its user's latest ``length`` is left out of its own context; any other rating
    gets the user's latest ``length - 1``. So training sees what scoring will feed the model, and
    no window shows the model the rating it is asked for. All of a user's older ratings share one
    history label; each of the latest ``length`` has its own.
    """
    order = timeline_order(interactions)
    users, items, unit = interactions.users[order], interactions.items[order], interactions.unit[order]
    n_users = int(users.max()) + 1 if len(users) else 0
    rank_from_end = _rank_from_end(users)
    latest_items, latest_ratings = _latest(users, items, unit, rank_from_end, n_users, length, pad)
    left_out = np.where(rank_from_end <= length, rank_from_end, 0)                # 0: the shared history
    own_column = np.where(left_out > 0, length - left_out, 0)                    # the column to leave out
    window_items = np.empty((len(users), length), dtype=np.int64)
    window_ratings = np.empty((len(users), length), dtype=np.float32)
    for k in range(length - 1):     # column by column: no [N, length] temporaries besides the result
        column = k + (k >= own_column)
        window_items[:, k] = latest_items[users, column]
        window_ratings[:, k] = latest_ratings[users, column]
    window_items[:, -1] = items
    window_ratings[:, -1] = unit
    return Windows(users=users, items=window_items, ratings=window_ratings,
                   histories=users.astype(np.int64) * (length + 1) + left_out)


TRAINING_CONTEXTS = {"latest": latest_context_windows, "preceding": preceding_windows}
"""How training windows choose each rating's context (``LSTMConfig.training_context``)."""


def user_context(interactions: Interactions, n_users: int, n_items: int, length: int) -> UserContext:
    """Each user's latest ``length`` rated items and ratings (``latest_history``), padded with the
    reserved index ``n_items``: the context the scoring job feeds sequence models."""
    return UserContext(*latest_history(interactions, n_users, length, pad=n_items))
