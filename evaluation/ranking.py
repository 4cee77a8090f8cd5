"""Top-N quality against held-out ratings: precision, recall, NDCG, MAP and hit rate at k,
catalogue coverage and popularity, as pure numpy functions over index arrays."""
from __future__ import annotations

import numpy as np

from scoring.topn import mask_seen, top_n

from export.data.dataset import Interactions


RECALL_AT = 20
"""The longer list recall is also reported for."""


def top_n_from_matrix(scores: np.ndarray, indptr: np.ndarray, items: np.ndarray, n: int) -> np.ndarray:
    """Top-N item indices per user (-1 where a user has fewer unseen items), scoring's own rules."""
    chosen, valid = top_n(mask_seen(scores, indptr, items), n)
    return np.where(valid, chosen, -1)


def ranking_metrics(recommended: np.ndarray, relevant: Interactions, n_items: int,
                    popularity: np.ndarray, k: int = 10) -> dict[str, float]:
    """Mean metrics@k over users with at least one relevant held-out item.

    ``recommended`` [n_users, >=k] item indices (-1 for none); ``relevant`` the held-out
    ratings that count as relevant; ``popularity`` training ratings per item. With at least
    ``RECALL_AT`` columns, ``recall_at_20`` too (recall over the longer list).
    """
    n_users = recommended.shape[0]
    truth = np.zeros((n_users, n_items), bool)
    truth[relevant.users, relevant.items] = True
    n_relevant = truth.sum(axis=1)
    users = np.flatnonzero(n_relevant > 0)
    every_hit = np.take_along_axis(truth, np.where(recommended >= 0, recommended, 0), axis=1) & (recommended >= 0)
    recs = recommended[:, :k]
    hits, n_rel = every_hit[users, :k], n_relevant[users]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(n_rel, k) - 1]
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    ap = (precision_at * hits).sum(axis=1) / np.minimum(n_rel, k)
    shown = recs[recs >= 0]
    return {
        "precision": float(hits.sum(axis=1).mean() / k),
        "recall": float((hits.sum(axis=1) / n_rel).mean()),
        "ndcg": float((dcg / ideal).mean()),
        "map": float(ap.mean()),
        "hit_rate": float((hits.sum(axis=1) > 0).mean()),
        "coverage": float(len(np.unique(shown)) / n_items),
        "mean_popularity": float(popularity[shown].mean()) if shown.size else 0.0,
        "users": int(len(users)),
        **({"recall_at_20": float((every_hit[users, :RECALL_AT].sum(axis=1) / n_rel).mean())}
           if recommended.shape[1] >= RECALL_AT else {}),
    }


def most_popular_scores(train: Interactions, n_users: int, n_items: int) -> np.ndarray:
    """Every user gets the items' training rating counts as scores."""
    counts = np.bincount(train.items, minlength=n_items).astype(np.float32)
    return np.broadcast_to(counts, (n_users, n_items)).copy()


def random_scores(n_users: int, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Seeded uniform random scores."""
    return rng.random((n_users, n_items), dtype=np.float32)
