"""The top-N peers: EASE is the closed form its paper states, and tuning sees training data only."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from evaluation.evaluate import peer_scores, random_cut, temporal_cut
from evaluation.peers import PEERS, Peer, ease_weights, interactions_matrix, tune
from export.config import RunConfig, child_seed
from export.data.dataset import Interactions
from export.data.loading import build_dataset
from export.data.synthetic import generate_ratings


def test_ease_equals_a_direct_solve_per_item():
    # Each column j of B minimises ||X_j - X b||^2 + l2 ||b||^2 with b_j = 0: a ridge regression of
    # item j on the other items, solved here directly, one item at a time.
    x = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [1, 1, 1, 0], [0, 0, 1, 1]], np.float64)
    l2 = 0.7
    weights = ease_weights(sparse.csr_matrix(x.astype(np.float32)), l2)
    for j in range(x.shape[1]):
        others = [k for k in range(x.shape[1]) if k != j]
        a = x[:, others]
        solved = np.linalg.solve(a.T @ a + l2 * np.eye(len(others)), a.T @ x[:, j])
        np.testing.assert_allclose(weights[others, j], solved, rtol=1e-9, atol=1e-12)
        assert weights[j, j] == 0
    scores = interactions_matrix(Interactions(*np.nonzero(x), np.ones(11, np.float32), np.zeros(11, np.int64)),
                                 5, 4) @ weights
    np.testing.assert_allclose(scores, x @ weights, rtol=1e-6)


def test_every_peer_ranks_better_than_chance_on_planted_data():
    frame = generate_ratings(120, 60, 4_000, seed=2)
    train, test = frame.iloc[:3_200], frame.iloc[3_200:]
    dataset = build_dataset([train, test], RunConfig(seed=1), np.random.default_rng(child_seed(1, "split")))
    scores, record = peer_scores(train, dataset, random_cut(0.2, 1), 1, PEERS)
    assert set(scores) == {p.name for p in PEERS}
    for peer in PEERS:
        assert record[peer.name]["setting"] in peer.grid
        assert max(record[peer.name]["validation_ndcg_at_10"].values()) > 0
        assert scores[peer.name].shape == (dataset.vocab.n_users, dataset.vocab.n_items)


def test_tuning_and_fitting_never_see_a_test_pair():
    frame = generate_ratings(80, 40, 2_000, seed=5)
    train = frame.iloc[:1_600]
    rated = set(zip(train["user_id"], train["item_id"]))
    # Planted test-only pairs: rated in the test alone, every one relevant.
    planted = [(u, i) for u in range(1, 81) for i in range(1, 41) if (u, i) not in rated][:200]
    test = pd.DataFrame({"user_id": [u for u, _ in planted], "item_id": [i for _, i in planted],
                         "rating": np.float32(5), "timestamp": np.int64(10**10)})
    dataset = build_dataset([train, test], RunConfig(seed=1), np.random.default_rng(0))
    vocab = dataset.vocab
    planted_index = {(int(np.searchsorted(vocab.user_ids, u)), int(np.searchsorted(vocab.item_ids, i)))
                     for u, i in planted}
    seen: list[sparse.csr_matrix] = []

    def recording(matrix: sparse.csr_matrix, setting: dict, seed: int) -> np.ndarray:
        seen.append(matrix.tocoo())
        return np.random.default_rng(seed).random(matrix.shape, dtype=np.float32)

    spy = Peer("spy", recording, ({"a": 1}, {"a": 2}), needs_implicit=False)
    for cut in (random_cut(0.2, 3), temporal_cut(0.2)):
        seen.clear()
        peer_scores(train, dataset, cut, 1, (spy,))
        assert len(seen) == 3   # two settings on the fitting part, the chosen one on all the training data
        for matrix in seen:
            assert not planted_index & set(zip(matrix.row.tolist(), matrix.col.tolist()))
    # and the validation part tune judges on is cut from the training data too
    fit, validation = random_cut(0.2, 3)(train)
    pairs = set(zip(validation["user_id"], validation["item_id"]))
    assert pairs <= rated and not pairs & set(planted)
    best, figures = tune(spy, Interactions.from_frame(fit, vocab, dataset.scale),
                         Interactions.from_frame(validation, vocab, dataset.scale), vocab.n_users, vocab.n_items, 4, 1)
    assert best in spy.grid and set(figures) == {"a=1", "a=2"}
