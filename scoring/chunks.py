"""What the table-writer thread does with a group of users' outputs: top-N and table rows."""
from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from contract.errors import VerificationError

from .bundle import Bundle
from .engine import ModelScorer, Outputs
from .run_manifest import ModelResult
from .topn import candidates_for, coherent_first, mask_seen, needs_more_ratings, top_n
from .writer import TableWriter, arrow_array


def check_finite(model: str, bundle: Bundle, output: str, values: np.ndarray,
                 users: np.ndarray, items: np.ndarray) -> None:
    """VerificationError naming the first pair whose ``values`` entry is NaN or infinite;
    ``users`` and ``items`` index ``values`` (broadcast against it, as for a [B, n_items] chunk)."""
    bad = ~np.isfinite(values)
    if bad.any():
        where = np.argwhere(bad)[0]
        user, item = np.broadcast_arrays(users, items)
        user, item = user[tuple(where)], item[tuple(where)]
        raise VerificationError(f"model '{model}' produced a non-finite {output} for user_id "
                                f"{bundle.user_ids[user]}, item_id {bundle.item_ids[item]}")


def ids(values: np.ndarray, array: pa.Array, index: np.ndarray) -> pa.Array:
    """The ids at ``index`` as an Arrow column: integers straight from numpy (the common case,
    and several times faster than a take), text through Arrow's take."""
    if values.dtype.kind in "iu":
        return arrow_array(values[index])
    return array.take(arrow_array(index.astype(np.int32)))


def repeated_ids(values: np.ndarray, array: pa.Array, start: int, stop: int, times: int) -> pa.Array:
    """Each id of ``[start, stop)`` repeated ``times`` times (the predictions' user column)."""
    if values.dtype.kind in "iu":
        return arrow_array(np.repeat(values[start:stop], times))
    return ids(values, array, np.repeat(np.arange(start, stop), times))


def tiled_ids(values: np.ndarray, array: pa.Array, times: int) -> pa.Array:
    """Every id, ``times`` times over (the predictions' item column)."""
    if values.dtype.kind in "iu":
        return arrow_array(np.tile(values, times))
    return ids(values, array, np.tile(np.arange(len(values)), times))


def prediction_columns(bundle: Bundle, start: int, stop: int, outputs: Outputs) -> dict[str, pa.Array]:
    """The predictions table's rows for users ``[start, stop)``: every item of each."""
    return {
        "user_id": repeated_ids(bundle.user_ids, bundle.user_id_array, start, stop, bundle.n_items),
        "item_id": tiled_ids(bundle.item_ids, bundle.item_id_array, stop - start),
        "prediction": arrow_array(outputs.rating.reshape(-1)),
    }


def recommendation_columns(bundle: Bundle, scorer: ModelScorer, start: int, stop: int, outputs: Outputs, n: int,
                           seconds: dict[str, float]) -> dict[str, pa.Array]:
    """The recommendations table's rows for users ``[start, stop)``: each user's best ``n`` unseen
    items by logit under the coherence rule (``topn.coherent_first``), rated from ``outputs`` or,
    for ranking-only outputs, by the pairwise graph. Time spent is added to ``seconds`` ("top_n",
    "onnxruntime_pairs")."""
    t = time.perf_counter()
    indptr = bundle.seen_indptr[start:stop + 1]
    # The logit chunk is the caller's alone and its seen entries are never read again.
    masked = mask_seen(outputs.logit, indptr - indptr[0], bundle.seen_items[indptr[0]:indptr[-1]], copy=False)
    first, first_real = top_n(masked, n)
    seconds["top_n"] += time.perf_counter() - t
    first_rating = _ratings(bundle, scorer, start, outputs, first, first_real, seconds)
    # Only lists whose best n hold an item predicted disliked reach past them (the same picks as
    # ranking candidates_for(n) for every list, at the cost of n for most).
    more = np.flatnonzero(needs_more_ratings(first_rating, first_real, bundle.coherence_midpoint, n))
    k = first.shape[1]
    width = candidates_for(n) if len(more) else k
    candidates = np.zeros((len(first), width), np.int64)
    real = np.zeros(candidates.shape, bool)
    rating = np.full(candidates.shape, np.nan, np.float32)
    candidates[:, :k], real[:, :k], rating[:, :k] = first, first_real, first_rating
    if len(more):
        t = time.perf_counter()
        wider, wider_real = top_n(masked[more], width)
        seconds["top_n"] += time.perf_counter() - t
        past = slice(k, wider.shape[1])
        candidates[more, past], real[more, past] = wider[:, past], wider_real[:, past]
        rating[more, past] = _ratings(bundle, scorer, start, outputs, wider[:, past], wider_real[:, past], seconds,
                                      more)
    t = time.perf_counter()
    items, valid, picked = coherent_first(candidates, real, rating, bundle.coherence_midpoint, n)
    rows, ranks = np.nonzero(valid)
    chosen = items[rows, ranks]
    seconds["top_n"] += time.perf_counter() - t
    return {
        "user_id": ids(bundle.user_ids, bundle.user_id_array, start + rows),
        "rank": arrow_array((ranks + 1).astype(np.int16)),
        "item_id": ids(bundle.item_ids, bundle.item_id_array, chosen),
        "prediction": arrow_array(rating[rows, picked[rows, ranks]]),
        "logit": arrow_array(masked[rows, chosen]),
    }


def _ratings(bundle: Bundle, scorer: ModelScorer, start: int, outputs: Outputs, candidates: np.ndarray,
             real: np.ndarray, seconds: dict[str, float], rows: np.ndarray | None = None) -> np.ndarray:
    """Predicted ratings [R, C] of ``candidates`` (NaN where not ``real``) of the chunk's users
    ``rows`` (all by default): from ``outputs`` where they hold ratings, else from the pairwise
    graph (its time added to ``seconds["onnxruntime_pairs"]``)."""
    rows = np.arange(len(candidates)) if rows is None else rows
    rating = np.full(candidates.shape, np.nan, np.float32)
    r, c = np.nonzero(real)
    if outputs.rating is not None:
        rating[r, c] = outputs.rating[rows[r], candidates[r, c]]
    elif len(r):
        t = time.perf_counter()
        rated = scorer.rate_pairs(start + rows[r], candidates[r, c])
        check_finite(scorer.model, bundle, "unit_rating", rated.unit_rating, start + rows[r], candidates[r, c])
        rating[r, c] = rated.rating
        seconds["onnxruntime_pairs"] += time.perf_counter() - t
    return rating


class ChunkSink:
    """Writes the outputs of users ``[start, stop)`` as rows of each table being written."""

    def __init__(self, bundle: Bundle, top_n: int, writers: Mapping[str, TableWriter], result: ModelResult,
                 scorer: ModelScorer) -> None:
        self.bundle, self.top_n, self.writers, self.result, self.scorer = bundle, top_n, writers, result, scorer

    def __call__(self, start: int, stop: int, outputs: Outputs) -> None:
        seconds = self.result.seconds
        for table, writer in self.writers.items():
            t = time.perf_counter()   # building the predictions' columns counts as writing them
            if table == "recommendations":
                columns = recommendation_columns(self.bundle, self.scorer, start, stop, outputs, self.top_n, seconds)
                t = time.perf_counter()
            else:
                columns = prediction_columns(self.bundle, start, stop, outputs)
            writer.write(columns)
            seconds["write"] += time.perf_counter() - t
