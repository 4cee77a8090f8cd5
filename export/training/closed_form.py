"""Closed-form fits of item x item models: regularised biases, EASE's constrained ridge
regression over a grid of penalties, shrunk cosine neighbours of the biases' residuals, and the
validation figures that choose among them.

EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", 2019) solves
``min ||X - X B||^2 + l2 ||B||^2`` with ``diag(B) = 0``: ``P = (X^T X + l2 I)^-1``,
``B = -P / diag(P)`` off the diagonal. The Gram matrix is decomposed once
(``X^T X = V diag(e) V^T``) so each penalty of a grid costs one matrix product.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .ranking_metric import ndcg_of

USER_CHUNK = 1024
"""Users scored at a time when a validation figure needs their rows of ``X B``."""


@dataclass(frozen=True)
class Biases:
    """``mean + b_u + b_i`` on [0, 1], fitted by alternating regularised means."""

    mean: float
    users: np.ndarray
    """float64 [n_users]."""
    items: np.ndarray
    """float64 [n_items]."""

    def of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mean + self.users[users] + self.items[items]


def fit_biases(users: np.ndarray, items: np.ndarray, unit: np.ndarray, n_users: int, n_items: int,
               l2: float, sweeps: int = 10) -> Biases:
    """Item then user biases, each the mean residual shrunk by ``l2`` pseudo-ratings, ``sweeps`` times."""
    mean = float(unit.mean())
    b_user, b_item = np.zeros(n_users), np.zeros(n_items)
    item_counts = np.bincount(items, minlength=n_items) + l2
    user_counts = np.bincount(users, minlength=n_users) + l2
    for _ in range(sweeps):
        b_item = np.bincount(items, unit - mean - b_user[users], n_items) / item_counts
        b_user = np.bincount(users, unit - mean - b_item[items], n_users) / user_counts
    return Biases(mean, b_user, b_item)


@dataclass(frozen=True)
class Ridge:
    """The user x item matrix ``X`` of one fit and its Gram matrix's eigendecomposition."""

    rows: torch.Tensor
    """``X``, a coalesced sparse COO tensor, float64 [n_users, n_items]."""
    gram: torch.Tensor
    """``X^T X``, float64 [n_items, n_items]."""
    vectors: torch.Tensor | None
    """Its eigenvectors, float64 [n_items, n_items] (None unless decomposed)."""
    values: torch.Tensor | None
    """Its eigenvalues, float64 [n_items]."""

    @classmethod
    def of(cls, users: np.ndarray, items: np.ndarray, values: np.ndarray, n_users: int, n_items: int,
           decompose: bool = True) -> "Ridge":
        index = torch.as_tensor(np.stack([users, items]))
        x = torch.sparse_coo_tensor(index, torch.as_tensor(values, dtype=torch.float64), (n_users, n_items),
                                    check_invariants=True).coalesce()
        with warnings.catch_warnings():   # torch's notice that its sparse products are in beta
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            gram = torch.sparse.mm(x.t().coalesce(), x).to_dense()
        if not decompose:
            return cls(x, gram, None, None)
        eigenvalues, vectors = torch.linalg.eigh(gram)
        return cls(x, gram, vectors, eigenvalues.clamp_min(0.0))

    def weights(self, l2: float) -> torch.Tensor:
        """EASE's ``B`` for penalty ``l2``, float64 [n_items, n_items], zero diagonal."""
        inverse = (self.vectors / (self.values + l2)) @ self.vectors.T
        weights = inverse / -torch.diagonal(inverse)
        weights.fill_diagonal_(0.0)
        return weights

    def scores(self, weights: torch.Tensor, users: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(users chunk, X[users] @ weights)`` in chunks of ``USER_CHUNK``."""
        for start in range(0, len(users), USER_CHUNK):
            chunk = users[start:start + USER_CHUNK]
            rows = torch.index_select(self.rows, 0, torch.as_tensor(chunk)).to_dense()
            yield chunk, (rows @ weights).numpy()


@dataclass(frozen=True)
class Neighbours:
    """Item x item cosine similarities of the users' residuals (zero where unrated), from which
    the rating weights ``sign(s) s^2`` are formed, each shrunk by how many users rated both."""

    residuals: Ridge
    """The residuals' rows ``E`` and Gram matrix ``E^T E``."""
    rated: Ridge
    """The rated-item indicators' rows ``M`` and ``M^T M``: the users who rated both items."""

    @classmethod
    def of(cls, users: np.ndarray, items: np.ndarray, residuals: np.ndarray, n_users: int,
           n_items: int) -> "Neighbours":
        return cls(Ridge.of(users, items, residuals, n_users, n_items, decompose=False),
                   Ridge.of(users, items, np.ones(len(users)), n_users, n_items, decompose=False))

    def weights(self, shrink: float) -> torch.Tensor:
        """``sign(s) s^2`` of the cosine ``s`` times ``common / (common + shrink)``, zero diagonal."""
        gram, common = self.residuals.gram, self.rated.gram
        norms = torch.diagonal(gram).sqrt()
        cosine = gram / (norms[:, None] * norms[None, :]).clamp_min(1e-12)
        shrunk = cosine * common / (common + shrink)
        shrunk.fill_diagonal_(0.0)
        return shrunk * shrunk.abs()


def ndcg_at(ridge: Ridge, weights: torch.Tensor, seen: tuple[np.ndarray, np.ndarray],
            relevant: tuple[np.ndarray, np.ndarray], n_items: int, k: int = 10) -> float:
    """``ranking_metric.ndcg_of`` the lists ``X B`` makes: the figure a ranking penalty is chosen by."""
    return ndcg_of(lambda users: ridge.scores(weights, users), seen, relevant, n_items, k)


def neighbour_average(residual_rows: torch.Tensor, rated_rows: torch.Tensor, weights: torch.Tensor,
                      floor: float) -> torch.Tensor:
    """``(E W) / (floor + M |W|)``: each item's weighted average of the user's residuals, ``M`` the
    rows' rated-item indicators; [B, n_items]."""
    return (residual_rows @ weights) / (floor + rated_rows @ weights.abs())


def residual_rmse(neighbours: Neighbours, weights: torch.Tensor, floor: float, users: np.ndarray,
                  items: np.ndarray, held: np.ndarray) -> float:
    """RMSE of ``neighbour_average`` against the residuals ``held`` of (u, i) pairs: the figure a
    rating shrinkage is chosen by."""
    if not len(users):
        return float("nan")
    order = np.argsort(users, kind="stable")
    users, items, held = users[order], items[order], held[order]
    errors = 0.0
    distinct = np.unique(users)
    for start in range(0, len(distinct), USER_CHUNK):
        chunk = torch.as_tensor(distinct[start:start + USER_CHUNK])
        rows = (torch.index_select(neighbours.residuals.rows, 0, chunk).to_dense(),
                torch.index_select(neighbours.rated.rows, 0, chunk).to_dense())
        predicted = neighbour_average(*rows, weights, floor).numpy()
        mine = (users >= int(chunk[0])) & (users <= int(chunk[-1]))
        row = np.searchsorted(chunk.numpy(), users[mine])
        errors += float(((predicted[row, items[mine]] - held[mine]) ** 2).sum())
    return (errors / len(users)) ** 0.5
