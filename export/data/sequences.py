"""The LSTM's view of the data: each user's items in time order, cut into fixed windows.

A user's timeline is their ratings sorted by timestamp, ties broken by item index. A window of
length L ends at the item to predict and holds L - 1 items of the same user as its context, in
time order, left-padded with the reserved padding index; ratings go alongside (0 where padded).
The scoring job's context for every pair is the user's latest L - 1 ratings; training windows
take either that context (``latest_contexts``) or the ratings just before each one in time
(``preceding_contexts``). Training keeps ``Contexts`` (where each rating's context lies in the
timeline) and gathers a batch's windows when it draws the batch.
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


@dataclass(frozen=True)
class Contexts:
    """Ratings in timeline order, each with where its window's context lies in that timeline: the
    ``length - 1`` positions before ``end``, leaving out ``skip`` (-1: none), padded before
    ``first``, its user's first position. ``windows`` gathers the windows of the rows a batch
    needs, so that training holds five numbers per rating instead of ``length`` items and ratings."""

    users: np.ndarray
    """User index, int64 [N], the timeline's order (by user, then time, then item)."""
    items: np.ndarray
    """Item index, int64 [N]."""
    unit: np.ndarray
    """Rating on [0, 1], float32 [N]."""
    first: np.ndarray
    """Position of the user's first rating, int64 [N]."""
    end: np.ndarray
    """The context is the positions before this one, int64 [N]."""
    skip: np.ndarray
    """A position inside the context to leave out (the rating's own), or -1, int64 [N]."""

    def __len__(self) -> int:
        return len(self.users)

    def windows(self, rows: np.ndarray, length: int, pad: int) -> Windows:
        """The windows of ``rows``: each row's context (oldest first, left-padded with ``pad``),
        then the row's own item and rating. A history label is the skipped position where there
        is one (a history no other row has) and ``N + end`` otherwise (the user's shared history)."""
        end, skip = self.end[rows], self.skip[rows]
        skipping = skip >= 0
        positions = (end - (length - 1) - skipping)[:, None] + np.arange(length - 1)
        positions += skipping[:, None] & (positions >= skip[:, None])
        valid = positions >= self.first[rows][:, None]
        positions = np.where(valid, positions, 0)
        items = np.empty((len(rows), length), dtype=np.int64)
        ratings = np.empty((len(rows), length), dtype=np.float32)
        items[:, :-1] = np.where(valid, self.items[positions], pad)
        ratings[:, :-1] = np.where(valid, self.unit[positions], 0.0)
        items[:, -1], ratings[:, -1] = self.items[rows], self.unit[rows]
        return Windows(users=self.users[rows], items=items, ratings=ratings,
                       histories=np.where(skipping, skip, len(self) + end))


def _timeline(interactions: Interactions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Users, items and ratings in timeline order, each row's user's first position, and its
    ``_rank_from_end``."""
    order = timeline_order(interactions)
    users = interactions.users[order]
    rank_from_end = _rank_from_end(users)
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1] if len(users) else np.zeros(0, np.int64)
    first = np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    return users, interactions.items[order], interactions.unit[order], first, rank_from_end


def preceding_contexts(interactions: Interactions, length: int) -> Contexts:
    """Each rating's context is the same user's ratings just before it in time."""
    users, items, unit, first, _ = _timeline(interactions)
    rows = np.arange(len(users))
    return Contexts(users, items, unit, first, end=rows, skip=np.full(len(users), -1, dtype=np.int64))


def latest_contexts(interactions: Interactions, length: int) -> Contexts:
    """Each rating's context is the one the scoring job gives its pair: the same user's latest
    ``length - 1`` other ratings.

    A rating among its user's latest ``length`` is left out of its own context; any other rating
    gets the user's latest ``length - 1``. So training sees what scoring will feed the model, and
    no window shows the model the rating it is asked for. All of a user's older ratings share one
    history; each of the latest ``length`` has its own.
    """
    users, items, unit, first, rank_from_end = _timeline(interactions)
    rows = np.arange(len(users))
    return Contexts(users, items, unit, first, end=rows + rank_from_end,
                    skip=np.where(rank_from_end <= length, rows, -1))


TRAINING_CONTEXTS = {"latest": latest_contexts, "preceding": preceding_contexts}
"""How training windows choose each rating's context (``LSTMConfig.training_context``)."""


def user_context(interactions: Interactions, n_users: int, n_items: int, length: int) -> UserContext:
    """Each user's latest ``length`` rated items and ratings (``latest_history``), padded with the
    reserved index ``n_items``: the context the scoring job feeds sequence models."""
    return UserContext(*latest_history(interactions, n_users, length, pad=n_items))
