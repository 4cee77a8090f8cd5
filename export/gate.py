"""The model gate: a new bundle becomes ``latest`` only if no model came out worse than the one it
replaces (what TFX's evaluator calls blessing).

Both bundles' models are evaluated on the new bundle's held-out ratings, each through its own
ONNX graphs with the scoring engine, on the same pairs and the same users: RMSE on the rating
scale over the held-out pairs both bundles know, and NDCG@10 of top-10 lists over the items both
know, leaving out each user's training items, a held-out item counting as relevant (the ranking
predicts that a user picks an item). A model is refused when a figure is worse by more
than the allowed share and the held-out sample can tell the difference from chance (a paired
one-sided test at 95%, per pair for RMSE, per user for NDCG): a few hundred new ratings would
otherwise refuse good bundles at random. Users or items the old bundle does not know are
counted and left out of both figures, and so are held-out pairs the old bundle trained on (in its
history but not among its own held-out pairs): a nightly retrain splits a larger data set anew,
and the old models would otherwise be judged on ratings they learnt.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract.bundle_format import HELD_OUT
from contract.errors import GateRefused, TrainingError
from contract.feedback import EXPLICIT
from contract.ids import positions
from contract.metrics import Sample
from scoring.bundle import Bundle
from scoring.sessions import ModelScorer
from scoring.topn import mask_seen, top_n

from .data.dataset import Interactions, seen_csr

log = logging.getLogger(__name__)

NDCG_K = 10
RECALL_K = 20
GATE_USERS = 5_000
"""Most held-out users the NDCG is measured over (a seeded sample beyond that), so the gate's
cost stays a few seconds at any catalogue size."""
Z_ONE_SIDED_95 = 1.645
"""A regression must be this many standard errors beyond zero to count (one-sided, 95%)."""
USER_CHUNK_PAIRS = 4_194_304
"""User-item scores per onnxruntime call while ranking."""


@dataclass(frozen=True)
class GateOptions:
    """How much worse a model may be before its bundle is refused."""

    max_regression: float = 0.01
    """Largest allowed share by which RMSE may grow or NDCG@10 shrink."""
    accept_worse: bool = False
    """Publish a bundle the gate refuses (the comparison is still recorded)."""
    accept_incomparable: bool = False
    """Publish a bundle whose models cannot be compared with the current ones (no held-out pair
    both know, another rating scale): the data was changed on purpose (``--accept-data-change``)."""


def _worse_beyond_noise(new: np.ndarray, old: np.ndarray) -> bool:
    """Whether the mean of ``new - old`` (paired per pair or per user) is above zero with one-sided
    95% confidence: a regression the held-out sample can tell from chance."""
    if len(new) < 2:
        return False
    difference = new - old
    return bool(difference.mean() - Z_ONE_SIDED_95 * difference.std(ddof=1) / np.sqrt(len(difference)) > 0)


def _ranking(scorer: ModelScorer, users: np.ndarray, columns: np.ndarray, seen: tuple[np.ndarray, np.ndarray],
             relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NDCG@10 and recall@20 of each of ``users`` (the scorer's indices), ranking its items
    ``columns``; ``seen`` (indptr, positions in ``columns``) per user is left out; ``relevant``
    [users, columns] bool."""
    indptr, items = seen
    step = max(1, USER_CHUNK_PAIRS // max(len(columns), 1))
    discounts = 1.0 / np.log2(np.arange(2, NDCG_K + 2))
    ndcg, recall = np.empty(len(users)), np.empty(len(users))
    for start in range(0, len(users), step):
        stop = min(start + step, len(users))
        logits = scorer.score_users(users[start:stop]).logit[:, columns]
        chunk_ptr = indptr[start:stop + 1]
        masked = mask_seen(logits, chunk_ptr - chunk_ptr[0], items[chunk_ptr[0]:chunk_ptr[-1]], copy=False)
        chosen, valid = top_n(masked, min(RECALL_K, len(columns)))
        hits = np.take_along_axis(relevant[start:stop], chosen, axis=1) & valid
        n_relevant = relevant[start:stop].sum(axis=1)
        dcg = (hits[:, :NDCG_K] * discounts[:min(NDCG_K, hits.shape[1])]).sum(axis=1)
        ndcg[start:stop] = dcg / np.cumsum(discounts)[np.minimum(n_relevant, NDCG_K) - 1]
        recall[start:stop] = hits.sum(axis=1) / n_relevant
    return ndcg, recall


def _users_sample(users: np.ndarray, seed: int) -> np.ndarray:
    distinct = np.unique(users)
    if len(distinct) <= GATE_USERS:
        return distinct
    return np.sort(np.random.default_rng(seed).choice(distinct, GATE_USERS, replace=False))


def trained_by(old: Bundle, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Whether ``old`` may have trained on each (user, item) pair (its indices): in its history
    and not among its held-out pairs (all of its history when it records none)."""
    width = np.int64(old.n_items)
    history = np.repeat(np.arange(old.n_users, dtype=np.int64), np.diff(old.seen_indptr)) * width + old.seen_items
    keys = users.astype(np.int64) * width + items
    seen = np.isin(keys, history)
    held_out_file = old.path / HELD_OUT
    if HELD_OUT in old.manifest["files"] and held_out_file.is_file():
        with np.load(held_out_file) as held_out:
            seen &= ~np.isin(keys, held_out["users"].astype(np.int64) * width + held_out["items"])
    return seen


def _compare_model(model: str, new: Bundle, old: Bundle, test: Interactions, train: Interactions,
                   threads: int, seed: int) -> dict[str, Any]:
    old_users, user_known = positions(old.user_ids, new.user_ids[test.users])
    old_items, item_known = positions(old.item_ids, new.item_ids[test.items])
    known = user_known & item_known
    learnt = np.zeros(len(test), bool)
    learnt[known] = trained_by(old, old_users[known], old_items[known])
    both = known & ~learnt
    new_scorer = ModelScorer.open(new.graphs(model), new.context, threads, ranking_only=True)
    old_scorer = ModelScorer.open(old.graphs(model), old.context, threads, ranking_only=True)
    figures: dict[str, Any] = {
        "pairs": int(both.sum()), "pairs_unknown_to_previous": int((~known).sum()),
        "pairs_previous_trained_on": int(learnt.sum()),
    }
    if not both.any():
        return figures
    if new.feedback == EXPLICIT:   # implicit feedback has no ratings to be wrong about
        actual = test.ratings[both].astype(np.float64)
        new_sq = (new_scorer.rate_pairs(test.users[both], test.items[both]).rating - actual) ** 2
        old_sq = (old_scorer.rate_pairs(old_users[both], old_items[both]).rating - actual) ** 2
        figures.update(rmse=float(np.sqrt(new_sq.mean())), previous_rmse=float(np.sqrt(old_sq.mean())),
                       rmse_worse_beyond_noise=_worse_beyond_noise(new_sq, old_sq))
    # Rank the items both bundles know, for users both know, leaving out their training items.
    column_in_old, column_known = positions(old.item_ids, new.item_ids)
    columns = np.flatnonzero(column_known)
    column_of = np.full(new.n_items, -1, np.int64)
    column_of[columns] = np.arange(len(columns))
    users = _users_sample(test.users[both], seed)
    row_of = np.full(new.n_users, -1, np.int64)
    row_of[users] = np.arange(len(users))
    relevant = np.zeros((len(users), len(columns)), bool)
    mine = both & (row_of[test.users] >= 0)
    relevant[row_of[test.users[mine]], column_of[test.items[mine]]] = True
    # Left out of the ranking: the user's training items, and held-out items the old bundle learnt.
    masked = train.concat(test.take(np.flatnonzero(learnt)))
    picked = (row_of[masked.users] >= 0) & (column_of[masked.items] >= 0)
    indptr, seen_columns = seen_csr(Interactions(row_of[masked.users[picked]], column_of[masked.items[picked]],
                                                 masked.ratings[picked], masked.timestamps[picked]), len(users))
    figures["users"] = int(len(users))
    ndcg, recall = _ranking(new_scorer, users, columns, (indptr, seen_columns), relevant)
    old_rows, _ = positions(old.user_ids, new.user_ids[users])
    previous, previous_recall = _ranking(old_scorer, old_rows, column_in_old[columns], (indptr, seen_columns),
                                         relevant)
    figures.update(ndcg_at_10=float(ndcg.mean()), previous_ndcg_at_10=float(previous.mean()),
                   ndcg_lower_beyond_noise=_worse_beyond_noise(previous, ndcg),
                   recall_at_20=float(recall.mean()), previous_recall_at_20=float(previous_recall.mean()),
                   recall_lower_beyond_noise=_worse_beyond_noise(previous_recall, recall))
    return figures


def _verdict(model: str, figures: dict[str, Any], limit: float) -> str | None:
    """Why ``model`` is refused, or None: its RMSE (explicit feedback) or recall@20 (implicit),
    or its NDCG@10, worse beyond the allowed share and beyond noise."""
    if "rmse" in figures:
        rmse, before = figures["rmse"], figures["previous_rmse"]
        if rmse > before * (1 + limit) and figures["rmse_worse_beyond_noise"]:
            return (f"model '{model}': RMSE {rmse:.4f} is {rmse / before - 1:.1%} worse than the current bundle's "
                    f"{before:.4f} (allowed {limit:.1%})")
    lower = [("NDCG@10", "ndcg_at_10", "ndcg_lower_beyond_noise")]
    if "rmse" not in figures:
        lower.append(("recall@20", "recall_at_20", "recall_lower_beyond_noise"))
    for label, key, beyond_noise in lower:
        value, before = figures[key], figures[f"previous_{key}"]
        if value < before * (1 - limit) and figures[beyond_noise]:
            return (f"model '{model}': {label} {value:.4f} is {1 - value / before:.1%} lower than the current "
                    f"bundle's {before:.4f} (allowed {limit:.1%})")
    return None


def _untested(bundle: Bundle, model: str) -> str | None:
    """Why ``model`` of ``bundle`` has no usable test figure (a metric that is not finite), or None."""
    metrics = bundle.manifest["models"][model].get("test_metrics", {})
    key, label = ("rmse_stars", "RMSE") if bundle.feedback == EXPLICIT else ("ndcg_at_10", "NDCG@10")
    value = metrics.get(key)
    if value is None or not np.isfinite(value):
        return f"it has no finite test {label} (got {value})"
    return None


def untested_without_previous(bundle: Bundle, held_out: str) -> None:
    """TrainingError (exit 1) for a first bundle with a model that has no finite test figure:
    with nothing to keep instead, it is an error, not a refusal."""
    for model in bundle.models:
        if untested := _untested(bundle, model):
            raise TrainingError(f"{held_out}: model '{model}': {untested}; nothing was published")


def _incomparable(record: dict[str, Any], model: str, figures: dict[str, Any], held_out: int,
                  options: GateOptions) -> None:
    """Record a model with no held-out rating both bundles can be judged on: no evidence that it
    is not worse, so it is refused unless the data change was accepted."""
    why = figures.pop("why", None) or (
        f"none of the {held_out:,} held-out ratings can be compared with the current bundle's models "
        f"({figures['pairs_unknown_to_previous']:,} have a user or item it does not know, "
        f"{figures['pairs_previous_trained_on']:,} it trained on)")
    figures.update(compared=False, why=why, passed=options.accept_incomparable)
    record["models"][model] = figures
    if options.accept_incomparable:
        log.warning("gate %s: not compared, %s (accepted: --accept-data-change)", model, why)
    else:
        record["refusals"].append(f"model '{model}': {why}, so there is no evidence it is not worse")


def evaluate_gate(new: Bundle, old: Bundle | None, test: Interactions, train: Interactions, options: GateOptions,
                  threads: int, seed: int) -> dict[str, Any]:
    """The comparison of every model of ``new`` with the same model of ``old``, and the verdict."""
    record: dict[str, Any] = {"previous_bundle": old.bundle_id if old is not None else None,
                              "max_regression": options.max_regression, "accept_worse": options.accept_worse,
                              "models": {}, "refusals": []}
    for model in new.models:
        if untested := _untested(new, model):
            record["models"][model] = {"compared": False, "passed": False, "why": untested}
            record["refusals"].append(f"model '{model}': {untested}")
            continue
        if old is None or model not in old.models:
            record["models"][model] = {"compared": False, "passed": True, "why": "no previous bundle" if old is None
                                       else "the previous bundle has no such model"}
            continue
        if old.feedback != new.feedback:
            figures = {"pairs": 0, "why": f"the feedback changed from {old.feedback} to {new.feedback}"}
        elif old.scale != new.scale:
            figures = {"pairs": 0, "why": f"the rating scale changed from {old.scale} to {new.scale}"}
        else:
            figures = _compare_model(model, new, old, test, train, threads, seed)
        if not figures["pairs"]:
            _incomparable(record, model, figures, len(test), options)
            continue
        reason = _verdict(model, figures, options.max_regression)
        figures.update(compared=True, passed=reason is None)
        record["models"][model] = figures
        if reason:
            record["refusals"].append(reason)
        log.info("gate %s: RMSE %s (previous %s), NDCG@10 %.4f (previous %.4f), recall@20 %.4f (previous %.4f) "
                 "over %d pairs, %d users%s", model, _figure(figures.get("rmse")), _figure(figures.get("previous_rmse")),
                 figures["ndcg_at_10"], figures["previous_ndcg_at_10"], figures["recall_at_20"],
                 figures["previous_recall_at_20"], figures["pairs"], figures["users"],
                 "" if reason is None else ": WORSE", extra={"figures": figures})
    record["passed"] = not record["refusals"]
    record["published_as_latest"] = record["passed"] or options.accept_worse
    return record


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def gate_samples(record: dict[str, Any]) -> list[Sample]:
    """The gate's figures for ``--metrics-file``."""
    out = [Sample("gate_passed", int(record["passed"]), help="1 if no model came out worse than the current "
                                                               "bundle's, else 0")]
    for model, figures in record["models"].items():
        if figures.get("compared"):
            for key in ("rmse", "previous_rmse", "ndcg_at_10", "previous_ndcg_at_10", "recall_at_20",
                        "previous_recall_at_20"):
                if key not in figures:
                    continue
                out.append(Sample(f"gate_{key}", figures[key], {"model": model},
                                  "the model gate's figures on the new bundle's held-out ratings"))
    return out


def refusal(record: dict[str, Any], kept_at: str, held_out: str) -> GateRefused:
    """The error a refused bundle ends its run with (exit status 3), carrying the gate's figures;
    ``held_out`` names the data the models were judged on."""
    error = GateRefused(f"{held_out}: model gate: {'; '.join(record['refusals'])}. The bundle is kept at {kept_at} "
                        "but not made latest; pass --accept-worse to publish it anyway")
    error.samples = gate_samples(record)
    return error
