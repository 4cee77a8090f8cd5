"""Ranking metrics on a case small enough to compute by hand."""
from __future__ import annotations

import numpy as np
import pytest

from export.data.dataset import Interactions
from export.data.dataset import seen_csr
from evaluation.ranking import ranking_metrics, top_n_from_matrix


def held(users, items):
    n = len(users)
    return Interactions(np.array(users), np.array(items), np.full(n, 5, np.float32), np.zeros(n, np.int64))


def test_hand_computed_metrics_at_2():
    # user 0: relevant {1, 3}; recs [1, 2] -> one hit at rank 1
    # user 1: relevant {0};    recs [2, 0] -> one hit at rank 2
    # user 2: nothing relevant -> not counted
    recs = np.array([[1, 2], [2, 0], [0, 1]])
    m = ranking_metrics(recs, held([0, 0, 1], [1, 3, 0]), n_items=4, popularity=np.array([4, 3, 2, 1.0]), k=2)
    assert m["users"] == 2
    assert m["precision"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["recall"] == pytest.approx((1 / 2 + 1 / 1) / 2)
    assert m["hit_rate"] == 1.0
    ndcg0 = 1.0 / (1 + 1 / np.log2(3))
    ndcg1 = (1 / np.log2(3)) / 1.0
    assert m["ndcg"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert m["map"] == pytest.approx((1.0 / 2 + 0.5 / 1) / 2)
    assert m["coverage"] == pytest.approx(3 / 4)
    assert m["mean_popularity"] == pytest.approx(np.mean([3, 2, 2, 4, 4, 3]))


def test_top_n_from_matrix_skips_history_and_marks_short_lists():
    history = held([0, 0, 1], [0, 1, 2])
    indptr, items = seen_csr(history, 2)
    scores = np.array([[9, 8, 7], [1, 2, 3]], np.float32)
    assert top_n_from_matrix(scores, indptr, items, 2).tolist() == [[2, -1], [1, 0]]
