"""Top-N selection: unseen items only, best unclipped score first, ties to the smaller item id."""
from __future__ import annotations

import numpy as np

BLOCK = 64
"""Columns per block when bounding each row's n-th best score (see ``top_n``)."""


def mask_seen(scores: np.ndarray, indptr: np.ndarray, items: np.ndarray, copy: bool = True) -> np.ndarray:
    """``scores`` [B, n_items] with each row's seen items set to -inf (a copy unless ``copy=False``).

    ``indptr`` [B + 1] and ``items`` are the rows' CSR history, ``indptr`` starting at 0.
    """
    masked = scores.copy() if copy else scores
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    masked[rows, items] = -np.inf
    return masked


def top_n(masked: np.ndarray, n: int, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` columns of each row of ``masked`` (seen items already at -inf).

    Returns ``items`` int64 [B, n'] with ``n' = min(n, n_items)`` and ``valid`` bool [B, n']:
    False where a row has fewer than ``n'`` unseen items. Ordered by score descending, equal
    scores by smaller column index, which is the smaller raw item id. NaN must not occur here.

    Exact, ties included, in about one pass over the scores: each row is cut into blocks of
    ``block`` columns; the k-th largest block maximum is a bound that the row's k-th best entry
    reaches, so only the entries of blocks whose maximum reaches it (a few times k per row on
    real scores) are sorted.
    """
    rows, n_items = masked.shape
    k = min(n, n_items)
    if rows == 0 or k == 0:
        return np.empty((rows, k), np.int64), np.zeros((rows, k), bool)
    # Blocks small enough that a row has at least 4k of them: with fewer, the k-th largest block
    # maximum bounds nothing and every entry would be sorted (30 candidates of 1,682 items).
    block = max(1, min(block, n_items // (4 * k)))
    full = n_items // block
    blocks = masked[:, :full * block].reshape(rows, full, block)
    maxima = blocks.max(axis=2) if full else np.empty((rows, 0), masked.dtype)
    if n_items % block:
        maxima = np.concatenate([maxima, masked[:, full * block:].max(axis=1, keepdims=True)], axis=1)
    if maxima.shape[1] > k:
        bound = np.partition(maxima, maxima.shape[1] - k, axis=1)[:, maxima.shape[1] - k]
    else:
        bound = np.full(rows, -np.inf, masked.dtype)
    block_rows, block_index = np.nonzero(maxima >= bound[:, None])
    # The chosen blocks' entries, the short last block padded with -inf at columns past the end
    # (they sort after every real entry, -inf ones included, and are never picked).
    values = np.full((len(block_rows), block), -np.inf, masked.dtype)
    whole = block_index < full
    values[whole] = blocks[block_rows[whole], block_index[whole]]
    values[~whole, :n_items - full * block] = masked[block_rows[~whole], full * block:]
    columns = (block_index[:, None] * block + np.arange(block)[None, :]).reshape(-1)
    cand_rows = np.repeat(block_rows, block)
    values = values.reshape(-1)
    keep = values >= bound[cand_rows]
    cand_rows, columns, values = cand_rows[keep], columns[keep], values[keep]
    order = np.lexsort((columns, -values, cand_rows))
    starts = np.searchsorted(cand_rows[order], np.arange(rows))
    picks = order[starts[:, None] + np.arange(k)[None, :]]
    return columns[picks].astype(np.int64), np.isfinite(values[picks])


GATHER_SHARE = 0.5
"""Below this share of the catalogue eligible, ``top_eligible`` selects among the eligible
columns gathered into a smaller matrix."""


def top_eligible(masked: np.ndarray, n: int, eligible: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``top_n`` of each row among the columns ``eligible`` (bool [n_items], None: all) allows:
    the same items, order and ties as ``top_n`` of ``masked`` with every other column at -inf.
    Under ``GATHER_SHARE`` of the catalogue eligible, the eligible columns are gathered into a
    smaller matrix first (cheaper than no rule); otherwise the ruled-out columns of ``masked``
    are set to -inf in place (one pass over the rows: a gather or a wider pick cost more)."""
    if eligible is None:
        return top_n(masked, n)
    rows, n_items = masked.shape
    columns = np.flatnonzero(eligible)
    if len(columns) >= GATHER_SHARE * n_items:
        np.add(masked, np.where(eligible, 0.0, -np.inf).astype(masked.dtype), out=masked)
        return top_n(masked, n)
    picked, real = top_n(masked[:, columns], n)
    width = min(n, n_items)   # as top_n's: lists past the eligible columns are not real
    items, valid = np.zeros((rows, width), np.int64), np.zeros((rows, width), bool)
    items[:, :picked.shape[1]], valid[:, :picked.shape[1]] = columns[picked], real
    return items, valid


CANDIDATE_FACTOR = 3
"""The coherence rule picks each list of N from the best ``CANDIDATE_FACTOR * N`` unseen items by
logit: wide enough that a list holds an item predicted disliked only where most of its user's
best-ranked items are (MovieLens 100K: under 2% of listed items, docs/models.md)."""


def candidates_for(n: int) -> int:
    """Best unseen items by logit that the coherence rule (``coherent_first``) picks ``n`` from."""
    return CANDIDATE_FACTOR * n


def needs_more_ratings(ratings: np.ndarray, valid: np.ndarray, midpoint: float | None, n: int) -> np.ndarray:
    """Rows whose best ``n`` candidates (rated in ``ratings``) hold one predicted below
    ``midpoint``: only their other candidates change what ``coherent_first`` picks, so only
    theirs need rating."""
    if midpoint is None:
        return np.zeros(len(ratings), bool)
    return (valid[:, :n] & (ratings[:, :n] < midpoint)).any(axis=1)


def coherent_first(items: np.ndarray, valid: np.ndarray, ratings: np.ndarray, midpoint: float | None,
                   n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coherence rule: of each row's candidates (``items`` [B, C], best logit first, ``valid``
    where real), those whose predicted ``ratings`` reach ``midpoint`` come first, then the rest,
    each group in logit order; the first ``n``. A list holds an item its model predicts the user
    will dislike only when too few candidates are predicted liked. ``midpoint`` None: logit order.
    Candidates past the first ``n`` of a row without ``needs_more_ratings`` may be left unrated
    (NaN): they are never picked.

    Returns ``items``, ``valid`` and the column of each pick in the candidates, [B, min(n, C)] each.
    """
    group = np.where(valid, 0, 2)
    if midpoint is not None:
        group = np.where(valid & (ratings < midpoint), 1, group)
    order = np.argsort(group, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(items, order, 1), np.take_along_axis(valid, order, 1), order
