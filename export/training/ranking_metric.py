"""The validation figure rankings are chosen by: NDCG@k of each user's list of unseen items
against the validation ratings that count as relevant."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

RELEVANT_MIN = 0.75
"""Validation ratings on [0, 1] at or above this count as relevant (4 stars on 1-5, as
``make evaluate``)."""

ScoreChunks = Callable[[np.ndarray], Iterable[tuple[np.ndarray, np.ndarray]]]
"""``users -> (users chunk, scores [chunk, n_items])`` in chunks, in the order given."""


def ndcg_of(score_chunks: ScoreChunks, seen: tuple[np.ndarray, np.ndarray],
            relevant: tuple[np.ndarray, np.ndarray], n_items: int, k: int = 10) -> float:
    """Mean NDCG@k over the users of ``relevant`` (user, item index pairs), their ``seen`` (user,
    item) pairs left out of the lists; NaN where no user has a relevant item."""
    users = np.unique(relevant[0])
    if not len(users):
        return float("nan")
    position = np.full(int(users.max()) + 1, -1)
    position[users] = np.arange(len(users))
    truth = np.zeros((len(users), n_items), bool)
    truth[position[relevant[0]], relevant[1]] = True
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    seen_users, seen_items = seen
    keep = seen_users <= users[-1]
    seen_users, seen_items = seen_users[keep], seen_items[keep]
    keep = position[seen_users] >= 0
    seen_users, seen_items = seen_users[keep], seen_items[keep]
    total = 0.0
    for chunk, scores in score_chunks(users):
        rows = position[chunk]
        mine = np.isin(seen_users, chunk)
        scores[position[seen_users[mine]] - rows[0], seen_items[mine]] = -np.inf
        top = np.argpartition(-scores, min(k, n_items - 1), axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
        hits = np.take_along_axis(truth[rows], top, 1)
        ideal = np.cumsum(discounts)[np.minimum(truth[rows].sum(1), k) - 1]
        total += float(((hits * discounts[:hits.shape[1]]).sum(1) / ideal).sum())
    return total / len(users)
