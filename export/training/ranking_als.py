"""The "squared" ranking objective solved by alternating least squares, as implicit-feedback ALS
solves it.

The head (``RankingBlocks``) scores ``logit[u, i] = <g_u * s, h_i> + <r_u, t_i> + c_i``, where
``g``, ``h`` are the rating representation it reads and ``s``, ``r``, ``t``, ``c`` its own. The
objective over the users with interactions is

    sum_ui w_ui (x_ui - logit_ui)^2 + decay (sum_u |g_u * s|^2 + |r_u|^2 + sum_i |t_i|^2),

``x`` one for an interaction and zero elsewhere, ``w`` an interaction's weight and one elsewhere.
It is quadratic in each block with the others fixed, so a sweep solves each exactly in turn: the
scale ``s``, every user's ``r_u``, then every item's ``t_i``; the objective never rises. The
offsets ``c`` are not fitted (they stay as the fit starts them, zero): a free offset per item fits
its share of users, and ranks everyone's lists towards what was popular, as ALS, which has none,
does not.
Sums over every pair are formed from the factors (``T^T T``, ``H^T T``...), and only the
interactions are visited one by one, so a sweep costs O(interactions) plus O(users + items)
small solves, never a users x items matrix.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from ..models.base import RankingBlocks

CHUNK_CELLS = 1 << 24
"""Most numbers one chunk of per-interaction terms holds (interactions x factor width)."""
CG_STEPS = 3
"""Conjugate-gradient steps per block solve where the interactions' weights differ."""


@dataclass(frozen=True)
class WeightedPairs:
    """The users with interactions, their rows as CSR and the same pairs by item (CSC), each pair's
    weight: what every sweep reads."""

    users: np.ndarray
    """Table rows of the users with interactions, sorted."""
    by_user: sparse.csr_matrix
    """[len(users), n_items] weights."""
    by_item: sparse.csc_matrix
    uniform: bool
    """Every weight is one: the per-pair corrections vanish."""

    @classmethod
    def of(cls, matrix: sparse.csr_matrix, positive_weight: float) -> "WeightedPairs":
        """``matrix`` [users, n_items] of confidences (> 0 where interacted): each interaction
        weighs ``positive_weight`` times its confidence, as implicit's ALS weighs alpha times r."""
        counts = np.diff(matrix.indptr)
        users = np.flatnonzero(counts)
        rows = matrix[users].astype(np.float64)
        rows.data = positive_weight * rows.data
        return cls(users, rows, rows.tocsc(), bool(np.all(rows.data == 1.0)))

    @property
    def nnz(self) -> int:
        return int(self.by_user.nnz)


@torch.no_grad()
def objective(blocks: RankingBlocks, pairs: WeightedPairs, decay: float) -> float:
    """The objective above. The sum over every pair of ``logit^2`` is ``trace(A^T A B^T B)`` for
    ``logit = A B^T`` with ``A = [g * s, r, 1]`` and ``B = [h, t, c]``; the interactions then
    replace their ``logit^2`` by ``w (1 - logit)^2``."""
    users = torch.as_tensor(pairs.users, device=blocks.items.device)
    a, b = _sides(blocks, users)
    total = float(((a.T @ a) * (b.T @ b)).sum())
    csr = pairs.by_user
    for start, stop in _chunks(csr.indptr, a.shape[1]):
        local, item, weight = _segment((csr.indices, csr.data), csr.indptr, start, stop, a.device)
        logit = (a[local + start] * b[item]).sum(1)
        total += float((weight * (1.0 - logit) ** 2 - logit ** 2).sum())
    penalty = a[:, :-1].pow(2).sum() + blocks.items.double().pow(2).sum()
    return total + decay * float(penalty)


def _sides(blocks: RankingBlocks, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``A = [g * s, r, 1]`` of ``users`` and ``B = [h, t, c]``, float64: ``logit = A B^T``."""
    read, h = _read(blocks, users)
    a = [blocks.users[users].double(), torch.ones(len(users), 1, dtype=torch.float64, device=users.device)]
    b = [blocks.items.double(), blocks.offsets.double()[:, None]]
    if read is not None:
        a, b = [read, *a], [h, *b]
    return torch.cat(a, 1), torch.cat(b, 1)


@torch.no_grad()
def sweep(blocks: RankingBlocks, pairs: WeightedPairs, decay: float) -> None:
    """One sweep: ``s`` (where the head reads the rating representation), every ``r_u`` (zero for
    users without interactions), then every ``t_i``, each the exact minimiser given the rest."""
    if blocks.scale is not None:
        _solve_scale(blocks, pairs, decay)
    _solve_users(blocks, pairs, decay)
    _solve_items(blocks, pairs, decay)


def _read(blocks: RankingBlocks, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """``g_u * s`` of ``users`` and ``h``, float64; (None, None) where the head reads nothing."""
    if blocks.scale is None:
        return None, None
    return blocks.read_users[users].double() * blocks.scale.double(), blocks.read_items.double()


def _chunks(indptr: np.ndarray, width: int) -> list[tuple[int, int]]:
    """Consecutive row ranges whose interactions times ``width`` fit ``CHUNK_CELLS``."""
    per = max(1, CHUNK_CELLS // max(width, 1))
    bounds, start = [], 0
    while start < len(indptr) - 1:
        stop = int(np.searchsorted(indptr, indptr[start] + per, side="right")) - 1
        stop = max(stop, start + 1)
        bounds.append((start, min(stop, len(indptr) - 1)))
        start = bounds[-1][1]
    return bounds


def _segment(major: tuple[np.ndarray, np.ndarray], indptr: np.ndarray, start: int, stop: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``start:stop`` of a compressed matrix: each stored pair's local row, its column, its
    weight, on ``device``."""
    lo, hi = int(indptr[start]), int(indptr[stop])
    local = np.repeat(np.arange(stop - start), np.diff(indptr[start:stop + 1]))
    return tuple(torch.as_tensor(x).to(device) for x in (local, major[0][lo:hi], major[1][lo:hi]))


def _solve_rows(gram: torch.Tensor, b: torch.Tensor, start: torch.Tensor, pairs: sparse.csr_matrix | sparse.csc_matrix,
                factors: torch.Tensor, uniform: bool) -> torch.Tensor:
    """Each row ``x`` of ``(gram + sum_j (w_j - 1) f_j f_j^T) x = b``, ``j`` over the row's pairs
    in ``pairs`` (compressed by row: the row's weights ``w_j``, the indices of its ``f_j`` in
    ``factors``). Uniform weights leave one system for every row, solved exactly; otherwise
    ``CG_STEPS`` of conjugate gradient from ``start`` (implicit's ALS does the same), each a
    product with every pair once, where forming each row's own matrix would cost a factor width
    more per pair. Each step lowers the block's objective, so a sweep still never raises it."""
    if uniform:
        return torch.linalg.solve(gram, b.T).T

    def product(x: torch.Tensor) -> torch.Tensor:
        out = x @ gram
        for first, stop in _chunks(pairs.indptr, factors.shape[1]):
            local, column, weight = _segment((pairs.indices, pairs.data), pairs.indptr, first, stop, factors.device)
            rows, f = local + first, factors[column]
            out.index_add_(0, rows, ((weight - 1.0) * (f * x[rows]).sum(1))[:, None] * f)
        return out

    return _conjugate_gradient(product, b, start)


def _conjugate_gradient(product, b: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """``CG_STEPS`` of conjugate gradient on each row's ``A x = b`` from ``start`` [n, k], ``product``
    giving every row's ``A x`` at once."""
    x = start.clone()
    residual = b - product(x)
    direction = residual.clone()
    size = residual.pow(2).sum(1)
    for _ in range(CG_STEPS):
        moved = product(direction)
        step = size / (direction * moved).sum(1).clamp_min(1e-30)
        x += step[:, None] * direction
        residual -= step[:, None] * moved
        new_size = residual.pow(2).sum(1)
        direction = residual + (new_size / size.clamp_min(1e-30))[:, None] * direction
        size = new_size
    return x


def _rest(read: torch.Tensor | None, h: torch.Tensor | None, c: torch.Tensor, rows: torch.Tensor,
          items: torch.Tensor) -> torch.Tensor:
    """The logit's part outside the block being solved, of the pairs (``rows`` of ``read``, ``items``):
    ``<g_u * s, h_i> + c_i``."""
    return c[items] + ((read[rows] * h[items]).sum(1) if read is not None else 0.0)


def _width(h: torch.Tensor | None) -> int:
    return 1 if h is None else h.shape[1]


def _add_interactions(b: torch.Tensor, pairs: sparse.csr_matrix | sparse.csc_matrix, factors: torch.Tensor,
                      rest: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], width: int) -> None:
    """Adds each stored pair's ``(w (1 - e) + e) f`` to its row of ``b``: the interactions' part of
    the blocks' right-hand sides, ``e = rest(row, column)`` the rest of the pair's logit and ``f``
    the column's factors; ``width``: numbers per pair that ``rest`` holds."""
    for start, stop in _chunks(pairs.indptr, factors.shape[1] + width):
        local, column, weight = _segment((pairs.indices, pairs.data), pairs.indptr, start, stop, factors.device)
        rows = local + start
        e = rest(rows, column)
        b.index_add_(0, rows, (weight * (1.0 - e) + e)[:, None] * factors[column])


def _solve_users(blocks: RankingBlocks, pairs: WeightedPairs, decay: float) -> None:
    users = torch.as_tensor(pairs.users, device=blocks.items.device)
    t, c = blocks.items.double(), blocks.offsets.double()
    read, h = _read(blocks, users)
    k = t.shape[1]
    gram = t.T @ t + decay * torch.eye(k, dtype=torch.float64, device=users.device)
    # sum over every item of (F_ui + c_i) t_i, the part of b_u an untouched item contributes
    b = -(c @ t).expand(len(users), k).clone()
    if read is not None:
        b -= read @ (h.T @ t)
    _add_interactions(b, pairs.by_user, t, lambda rows, items: _rest(read, h, c, rows, items), _width(h))
    solved = _solve_rows(gram, b, blocks.users[users].double(), pairs.by_user, t, pairs.uniform)
    blocks.users.zero_()
    blocks.users[users] = solved.to(blocks.users.dtype)


def _solve_items(blocks: RankingBlocks, pairs: WeightedPairs, decay: float) -> None:
    users = torch.as_tensor(pairs.users, device=blocks.items.device)
    r, c = blocks.users[users].double(), blocks.offsets.double()
    read, h = _read(blocks, users)
    k = r.shape[1]
    gram = r.T @ r + decay * torch.eye(k, dtype=torch.float64, device=users.device)
    # sum over every user of (F_ui + c_i) r_u, the part of b_i an untouched pair contributes
    b = -c[:, None] * r.sum(0)
    if read is not None:
        b -= h @ (read.T @ r)
    _add_interactions(b, pairs.by_item, r, lambda items, rows: _rest(read, h, c, rows, items), _width(h))
    solved = _solve_rows(gram, b, blocks.items.double(), pairs.by_item, r, pairs.uniform)
    blocks.items.copy_(solved.to(blocks.items.dtype))


def _solve_scale(blocks: RankingBlocks, pairs: WeightedPairs, decay: float) -> None:
    users = torch.as_tensor(pairs.users, device=blocks.items.device)
    g, h = blocks.read_users[users].double(), blocks.read_items.double()
    r, t, c = blocks.users[users].double(), blocks.items.double(), blocks.offsets.double()
    d = g.shape[1]
    system = (g.T @ g) * (h.T @ h) + torch.diag(decay * g.pow(2).sum(0))
    # sum over every pair of m_ui (g_u * h_i), m the head's own part r_u . t_i + c_i
    b = -(((r.T @ g) * (t.T @ h)).sum(0) + g.sum(0) * (c @ h))
    csr = pairs.by_user
    for start, stop in _chunks(csr.indptr, d + r.shape[1]):
        local, item, weight = _segment((csr.indices, csr.data), csr.indptr, start, stop, g.device)
        phi = g[local + start] * h[item]
        m = (r[local + start] * t[item]).sum(1) + c[item]
        b += phi.T @ (weight * (1.0 - m) + m)
    if pairs.uniform:
        scale = torch.linalg.solve(system, b)
    else:
        def product(x: torch.Tensor) -> torch.Tensor:   # [1, d]: system x + sum_ui (w_ui - 1) phi_ui (phi_ui . x)
            out = x @ system
            for first, stop in _chunks(csr.indptr, d):
                local, item, weight = _segment((csr.indices, csr.data), csr.indptr, first, stop, g.device)
                phi = g[local + first] * h[item]
                out += (((weight - 1.0) * (phi @ x[0])) @ phi)[None]
            return out
        scale = _conjugate_gradient(product, b[None], blocks.scale.double()[None])[0]
    blocks.scale.copy_(scale.to(blocks.scale.dtype))
