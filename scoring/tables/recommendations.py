"""``recommendations``: each user's top-N unseen items by the model's ranking logit, under the
coherence rule and the run's item rules."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from contract.errors import VerificationError
from contract.parity import allowed_difference

from ..bundle import Bundle
from ..chunks import check_finite, ids
from ..settings import PassSettings
from ..topn import candidates_for, coherent_first, mask_seen, needs_more_ratings, top_eligible, top_n
from ..writer import arrow_array, table_file
from .base import DriftInputs, Table, TorchOutputs, UserChunk
from .compare import indices, list_change, list_examples, read_rows, stars_tolerance
from .registry import register


def eligible_unseen(bundle: Bundle, settings: PassSettings) -> np.ndarray:
    """Per user, the items a list may hold: unseen, and allowed by the run's rules."""
    eligible = settings.rules.eligible(bundle.n_items)
    owners = np.repeat(np.arange(bundle.n_users), np.diff(bundle.seen_indptr))
    seen_eligible = np.bincount(owners, weights=eligible[bundle.seen_items], minlength=bundle.n_users)
    return int(eligible.sum()) - seen_eligible.astype(np.int64)


class Recommendations(Table):
    name = "recommendations"
    columns = pa.schema(
        [pa.field("user_id", pa.int32(), nullable=False),
         pa.field("rank", pa.int16(), nullable=False),
         pa.field("item_id", pa.int32(), nullable=False),
         pa.field("prediction", pa.float32(), nullable=False),
         pa.field("logit", pa.float32(), nullable=False)],
        metadata={"description": "Top-N unseen items per user, rank 1 = best: ordered by 'logit', the model's "
                                 "ranking logit (does the user rate this item at all), ties by smaller item_id; "
                                 "'prediction' is the predicted rating."})
    examples_title = "Top {top_n} by {model}"
    value_column = "prediction"
    implicit_description = ("Top-N unseen items per user, rank 1 = best: ordered by 'logit', the model's ranking "
                            "logit (does the user interact with this item), ties by smaller item_id; 'score' is "
                            "the model's score, its estimate on [0, 1] that the user interacts with the item.")

    def chunk_rows(self, chunk: UserChunk) -> dict[str, pa.Array]:
        """Each user's best ``top_n`` unseen eligible items by logit under the coherence rule
        (``topn.coherent_first``), rated from the chunk's outputs or, for ranking-only outputs, by
        the pairwise graph. The run's rules leave items out as the seen ones are
        (``topn.top_eligible``)."""
        bundle, outputs, n, seconds = chunk.bundle, chunk.outputs, chunk.settings.top_n, chunk.seconds
        t = time.perf_counter()
        indptr = bundle.seen_indptr[chunk.start:chunk.stop + 1]
        # The logit chunk is the pass's alone and its seen entries are never read again.
        masked = mask_seen(outputs.logit, indptr - indptr[0], bundle.seen_items[indptr[0]:indptr[-1]], copy=False)
        eligible = chunk.settings.rules.eligible_or_none(bundle.n_items)
        first, first_real = top_eligible(masked, n, eligible)
        seconds["top_n"] += time.perf_counter() - t
        first_rating = _ratings(chunk, first, first_real)
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
            wider, wider_real = top_eligible(masked[more], width, eligible)
            seconds["top_n"] += time.perf_counter() - t
            past = slice(k, wider.shape[1])
            candidates[more, past], real[more, past] = wider[:, past], wider_real[:, past]
            rating[more, past] = _ratings(chunk, wider[:, past], wider_real[:, past], more)
        t = time.perf_counter()
        items, valid, picked = coherent_first(candidates, real, rating, bundle.coherence_midpoint, n)
        rows, ranks = np.nonzero(valid)
        chosen = items[rows, ranks]
        seconds["top_n"] += time.perf_counter() - t
        return {"user_id": ids(bundle.user_ids, bundle.user_id_array, chunk.start + rows),
                "rank": arrow_array((ranks + 1).astype(np.int16)),
                "item_id": ids(bundle.item_ids, bundle.item_id_array, chosen),
                bundle.value_column: arrow_array(rating[rows, picked[rows, ranks]]),
                "logit": arrow_array(masked[rows, chosen])}

    def expected_rows(self, bundle: Bundle, settings: PassSettings) -> int:
        return int(np.minimum(eligible_unseen(bundle, settings), settings.top_n).sum())

    def run_figures(self, run_dir: Path, bundle: Bundle, model: str) -> dict[str, Any]:
        """The share of listed items whose predicted rating is below the scale's midpoint: a list
        that recommends what its own model says the user will dislike reads as a bug. None for
        implicit feedback, where a low score is no dislike."""
        if bundle.coherence_midpoint is None:
            return {"below_midpoint": None}
        folder = table_file(run_dir, self.name, model).parent
        predictions = ds.dataset(folder, format="parquet").to_table(columns=["prediction"]).column("prediction")
        share = (float(pc.mean(pc.less(predictions, bundle.scale.midpoint).cast(pa.float64())).as_py())
                 if len(predictions) else None)
        return {"below_midpoint": share}

    def drift(self, now: ds.Dataset, before: ds.Dataset, inputs: DriftInputs) -> tuple[dict[str, Any], float]:
        """The share of users whose list changed, and the catalogue's coverage now and before."""
        ours = read_rows(now, ["user_id", "rank", "item_id"])
        theirs = read_rows(before, ["user_id", "rank", "item_id"])
        compared, share, changed = list_change(ours, theirs, "user_id", "item_id")
        return {"users_compared": compared, "users_comparable_share": share, "topn_changed_share": changed,
                "coverage": _coverage(ours, inputs.n_items),
                "previous_coverage": _coverage(theirs, inputs.previous_n_items)}, share

    def verify(self, run_dir: Path, bundle: Bundle, model: str, torch: TorchOutputs,
               settings: PassSettings) -> dict[str, float]:
        """Every list against torch's: the same length, the same items but for swaps between
        near-tied logits, each item's rating and logit within tolerance."""
        n = settings.top_n
        path = table_file(run_dir, self.name, model)
        table = pq.read_table(path)
        users = indices(bundle, table.column("user_id").to_numpy(), "user", f"{path}: column 'user_id'")
        items = indices(bundle, table.column("item_id").to_numpy(), "item", f"{path}: column 'item_id'")
        logits = torch.logits
        masked = mask_seen(logits, bundle.seen_indptr, bundle.seen_items)
        penalty = settings.rules.penalty(bundle.n_items)
        if penalty is not None:
            masked += penalty
        candidates, real = top_n(masked, candidates_for(n))
        rated = bundle.scale.clipped_rating(np.take_along_axis(torch.unit, candidates, 1))
        expected, valid, _ = coherent_first(candidates, real, rated, bundle.coherence_midpoint, n)
        if table.num_rows != int(valid.sum()):
            raise VerificationError(f"{path}: {table.num_rows} rows; torch gives {int(valid.sum())} recommendations")
        ranks = table.column("rank").to_numpy().astype(np.int64) - 1
        if (ranks < 0).any() or (ranks >= expected.shape[1]).any() or not valid[users, ranks].all():
            raise VerificationError(f"{path}: ranks outside 1..{expected.shape[1]} or beyond a user's unseen items")
        ours = masked[users, items]
        theirs = masked[users, expected[users, ranks]]
        gap = np.abs(ours - theirs)
        gap[~np.isfinite(ours)] = np.inf
        excess = gap / allowed_difference(theirs, logits=True)
        worst = int(np.argmax(excess)) if len(gap) else 0
        if len(gap) and excess[worst] > 1:
            raise VerificationError(
                f"{path}: user_id {bundle.user_ids[users[worst]]} rank {ranks[worst] + 1} holds item_id "
                f"{bundle.item_ids[items[worst]]}; torch ranks item_id "
                f"{bundle.item_ids[expected[users[worst], ranks[worst]]]} there (logit gap {gap[worst]:.3g}, or a "
                "seen or ruled-out item)")
        rating = bundle.scale.clipped_rating(torch.unit[users, items])
        if np.abs(rating - table.column(bundle.value_column).to_numpy()).max(initial=0) > stars_tolerance(bundle):
            raise VerificationError(f"{path}: a recommendation's {bundle.value_column} differs from torch's")
        if (np.abs(ours - table.column("logit").to_numpy()) > allowed_difference(ours, logits=True)).any():
            raise VerificationError(f"{path}: a recommendation's logit differs from torch's ranking logit")
        return {"tie_swaps": int((expected[users, ranks] != items).sum())}

    def examples(self, run_dir: Path, bundle: Bundle, model: str, keys: list[Any]) -> dict[str, Any]:
        """The lists of the users ``keys``, with titles."""
        return list_examples(ds.dataset(table_file(run_dir, self.name, model).parent, format="parquet"), bundle,
                         "user_id", keys, "item_id", bundle.value_column)


def _ratings(chunk: UserChunk, candidates: np.ndarray, real: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Predicted ratings [R, C] of ``candidates`` (NaN where not ``real``) of the chunk's users
    ``rows`` (all by default): from the outputs where they hold ratings, else from the pairwise
    graph (its time added to ``seconds["onnxruntime_pairs"]``)."""
    rows = np.arange(len(candidates)) if rows is None else rows
    rating = np.full(candidates.shape, np.nan, np.float32)
    r, c = np.nonzero(real)
    if chunk.outputs.rating is not None:
        rating[r, c] = chunk.outputs.rating[rows[r], candidates[r, c]]
    elif len(r):
        t = time.perf_counter()
        rated = chunk.scorer.rate_pairs(chunk.start + rows[r], candidates[r, c])
        check_finite(chunk.scorer.model, chunk.bundle, "unit_rating", rated.unit_rating, chunk.start + rows[r],
                     candidates[r, c])
        rating[r, c] = rated.rating
        chunk.seconds["onnxruntime_pairs"] += time.perf_counter() - t
    return rating


def _coverage(table: pa.Table, n_items: int) -> float:
    return len(pc.unique(table.column("item_id"))) / n_items if n_items else 0.0


RECOMMENDATIONS = register(Recommendations())
