"""The figures rankings are chosen and tested by: NDCG@k (with recall@20 and MAP@k beside it) of
each user's list of unseen items against the held-out ratings that count as relevant."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

RELEVANT_MIN = 0.75
"""Validation ratings on [0, 1] at or above this count as relevant (4 stars on 1-5, as
``make evaluate``)."""

RECALL_AT = 20
"""The longer list recall is measured over."""

ScoreChunks = Callable[[np.ndarray], Iterable[tuple[np.ndarray, np.ndarray]]]
"""``users -> (users chunk, scores [chunk, n_items])`` in chunks, in the order given."""


def ndcg_of(score_chunks: ScoreChunks, seen: tuple[np.ndarray, np.ndarray],
            relevant: tuple[np.ndarray, np.ndarray], n_items: int, k: int = 10) -> float:
    """Mean NDCG@k over the users of ``relevant`` (user, item index pairs), their ``seen`` (user,
    item) pairs left out of the lists; NaN where no user has a relevant item."""
    return ranking_figures(score_chunks, seen, relevant, n_items, k, longest=k)["ndcg"]


def ranking_figures(score_chunks: ScoreChunks, seen: tuple[np.ndarray, np.ndarray],
                    relevant: tuple[np.ndarray, np.ndarray], n_items: int, k: int = 10,
                    longest: int = RECALL_AT) -> dict[str, float]:
    """``ndcg`` and ``map`` (at k) and ``recall`` (at ``longest``, 20 by default): their means over
    the users of ``relevant``, each user's ``seen`` items left out (NaN where no user has a
    relevant item), and the number of ``users``."""
    users = np.unique(relevant[0])
    names = ("ndcg", "map", "recall")
    if not len(users):
        return {name: float("nan") for name in names} | {"users": 0}
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
    length = min(max(k, longest), n_items)
    totals = np.zeros(3)
    for chunk, scores in score_chunks(users):
        rows = position[chunk]
        mine = np.isin(seen_users, chunk)
        scores[position[seen_users[mine]] - rows[0], seen_items[mine]] = -np.inf
        top = np.argpartition(-scores, length - 1, axis=1)[:, :length] if length < n_items else \
            np.tile(np.arange(n_items), (len(chunk), 1))
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
        hits = np.take_along_axis(truth[rows], top, 1) & np.isfinite(np.take_along_axis(scores, top, 1))
        n_relevant = truth[rows].sum(1)
        first = hits[:, :k]
        ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
        precision_at = np.cumsum(first, axis=1) / np.arange(1, first.shape[1] + 1)
        totals += [float(((first * discounts[:first.shape[1]]).sum(1) / ideal).sum()),
                   float(((precision_at * first).sum(1) / np.minimum(n_relevant, k)).sum()),
                   float((hits[:, :longest].sum(1) / n_relevant).sum())]
    return dict(zip(names, (totals / len(users)).tolist())) | {"users": int(len(users))}
