"""Top-N peers: what a team would use instead of our lists, each tuned like our models.

EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", 2019) is written here in
numpy; ALS, BPR and item-kNN (cosine) are the ``implicit`` package's. Each learns from the
binary user x item matrix of the training ratings (every rating an interaction, as these
methods are used). Each one's hyperparameters are chosen from its ``grid`` by NDCG@10 on a
validation split cut from the training data alone, the same way as the test split was cut;
the chosen setting is then fitted on the whole training data.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from export.data.dataset import Interactions, seen_csr

from .ranking import ranking_metrics, top_n_from_matrix

log = logging.getLogger(__name__)

Scorer = Callable[[sparse.csr_matrix, dict[str, Any], int], np.ndarray]
"""Fit on a binary user x item matrix with the given setting and seed; scores [users, items]."""


def interactions_matrix(data: Interactions, n_users: int, n_items: int) -> sparse.csr_matrix:
    """The binary user x item matrix of ``data`` (float32, one per rated pair)."""
    values = np.ones(len(data), np.float32)
    matrix = sparse.csr_matrix((values, (data.users, data.items)), shape=(n_users, n_items))
    matrix.data[:] = 1.0
    return matrix


def ease_weights(matrix: sparse.csr_matrix, l2: float) -> np.ndarray:
    """EASE's item x item weights: ``P = (X^T X + l2 I)^-1``, ``B = -P / diag(P)`` off the
    diagonal, 0 on it."""
    gram = (matrix.T @ matrix).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    weights = inverse / -np.diag(inverse)
    weights[np.diag_indices_from(weights)] = 0.0
    return weights


def ease_scores(matrix: sparse.csr_matrix, setting: dict[str, Any], seed: int) -> np.ndarray:
    return np.asarray(matrix @ ease_weights(matrix, setting["l2"]), np.float32)


def _threads() -> int:
    from contract.machine import available_cpus
    return available_cpus()


@contextmanager
def _implicit_fit() -> Iterator[None]:
    """Around an ``implicit`` fit: BLAS on one thread (implicit runs its own threads, and asks for
    this), and without its notices about that and about converting matrices internally."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="OpenBLAS is configured to use")
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        yield


def als_scores(matrix: sparse.csr_matrix, setting: dict[str, Any], seed: int) -> np.ndarray:
    from implicit.cpu.als import AlternatingLeastSquares
    with _implicit_fit():
        model = AlternatingLeastSquares(factors=setting["factors"], regularization=setting["regularization"],
                                        alpha=setting["alpha"], iterations=setting["iterations"], random_state=seed,
                                        num_threads=_threads(), calculate_training_loss=False)
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors @ model.item_factors.T, np.float32)


def bpr_scores(matrix: sparse.csr_matrix, setting: dict[str, Any], seed: int) -> np.ndarray:
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    model = BayesianPersonalizedRanking(factors=setting["factors"], learning_rate=setting["learning_rate"],
                                        regularization=setting["regularization"], iterations=setting["iterations"],
                                        random_state=seed, num_threads=_threads())
    with _implicit_fit():
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors @ model.item_factors.T, np.float32)


def item_knn_scores(matrix: sparse.csr_matrix, setting: dict[str, Any], seed: int) -> np.ndarray:
    from implicit.nearest_neighbours import CosineRecommender
    model = CosineRecommender(K=setting["neighbours"], num_threads=_threads())
    with _implicit_fit():
        model.fit(matrix, show_progress=False)
    return np.asarray((matrix @ model.similarity).toarray(), np.float32)


def _grid(**axes: tuple) -> tuple[dict[str, Any], ...]:
    settings: list[dict[str, Any]] = [{}]
    for name, values in axes.items():
        settings = [{**s, name: v} for s in settings for v in values]
    return tuple(settings)


@dataclass(frozen=True)
class Peer:
    """A top-N method from elsewhere, with the grid its setting is chosen from."""

    name: str
    scores: Scorer
    grid: tuple[dict[str, Any], ...]
    needs_implicit: bool = True


PEERS = (
    Peer("ease", ease_scores, _grid(l2=(50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0)), needs_implicit=False),
    Peer("implicit_als", als_scores, _grid(factors=(16, 32, 64), regularization=(0.1, 1.0, 10.0),
                                           alpha=(1.0, 5.0, 20.0), iterations=(15,))),
    Peer("implicit_bpr", bpr_scores, _grid(factors=(32, 64, 128), learning_rate=(0.005, 0.01, 0.05),
                                           regularization=(0.001, 0.01), iterations=(100,))),
    Peer("item_knn", item_knn_scores, _grid(neighbours=(50, 100, 200, 400, 800, 1600))),
)
"""The peers, with the grids docs/evaluation.md states."""


def implicit_available() -> bool:
    try:
        import implicit  # noqa: F401
    except ImportError:
        return False
    return True


def validation_ndcg(peer: Peer, setting: dict[str, Any], fit: Interactions, validation: Interactions,
                    n_users: int, n_items: int, relevant_stars: float, seed: int, k: int = 10) -> float:
    """NDCG@k of ``peer`` with ``setting``, fitted on ``fit`` and judged on ``validation``'s
    ratings of at least ``relevant_stars`` (the items of ``fit`` excluded from the lists)."""
    scores = peer.scores(interactions_matrix(fit, n_users, n_items), setting, seed)
    indptr, seen = seen_csr(fit, n_users)
    recommended = top_n_from_matrix(scores, indptr, seen, k)
    relevant = validation.take(np.flatnonzero(validation.ratings >= relevant_stars))
    popularity = np.bincount(fit.items, minlength=n_items).astype(np.float64)
    return ranking_metrics(recommended, relevant, n_items, popularity, k)["ndcg"]


def tune(peer: Peer, fit: Interactions, validation: Interactions, n_users: int, n_items: int,
         relevant_stars: float, seed: int) -> tuple[dict[str, Any], dict[str, float]]:
    """The setting of ``peer``'s grid with the best validation NDCG@10, and every setting's figure."""
    figures = {}
    for setting in peer.grid:
        figures[_label(setting)] = validation_ndcg(peer, setting, fit, validation, n_users, n_items,
                                                   relevant_stars, seed)
    best = max(peer.grid, key=lambda s: figures[_label(s)])
    log.info("%s: chose %s (validation NDCG@10 %.4f)", peer.name, _label(best), figures[_label(best)])
    return best, figures


def _label(setting: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items())
