"""``python -m evaluation`` (``make evaluate``): cross-validated rating error and top-N quality.

For every split (k seeded folds, explicit train/test pairs, and a temporal hold-out of each
user's latest ratings) the models are trained as ``make train`` trains them and compared
on the same test ratings with a global mean, a user + item bias baseline and, when installed,
Surprise's SVD, SVD++ and BaselineOnly. Top-10 lists (training items excluded, the scoring
job's selection rules) are compared with most-popular-unseen and random.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from contract import strict_json
from contract.cli import run_cli, setup_failure
from contract.errors import RecJobError, UsageError
from contract.paths import DEFAULT_DATA_DIR, DEFAULT_EVALUATION
from export.cli import add_training_options, make_config
from export.config import RunConfig, child_seed
from export.data.dataset import Dataset, Interactions, seen_csr
from export.data.loading import DataSource, build_dataset
from export.data.ratings_file import RatingsOptions, read_ratings
from contract.feedback import EXPLICIT, FEEDBACK_KINDS, IMPLICIT_SCALE
from export.data.sequences import user_context
from export.models import registry
from export.training.metrics import rating_errors
from export.training.workers import jobs_option, train_models
from scoring.feeds import build_feeds
from scoring.topn import candidates_for, coherent_first, mask_seen, top_n
from export.training.validation import predict_in_batches

from . import baselines
from .peers import PEERS, Peer, implicit_available, interactions_matrix, tune
from .ranking import RECALL_AT, most_popular_scores, random_scores, ranking_metrics, top_n_from_matrix

log = logging.getLogger(__name__)

TOP_K = 10
RELEVANT_STARS = 4


def kfold_splits(frame: pd.DataFrame, folds: int, seed: int) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """``folds`` seeded random folds: each one's ratings are the test set once."""
    parts = np.array_split(np.random.default_rng(seed).permutation(len(frame)), folds)
    return [(f"fold{k + 1}", frame.drop(frame.index[part]), frame.iloc[np.sort(part)]) for k, part in enumerate(parts)]


def temporal_split(frame: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's latest ``fraction`` of ratings (by time, ties by item id) held out; at least one
    rating per user stays in training."""
    ordered = frame.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    position = ordered.groupby("user_id").cumcount(ascending=False)  # 0 = the latest
    size = ordered.groupby("user_id")["item_id"].transform("size")
    held = position < np.minimum(np.floor(size * fraction).astype(int), size - 1)
    return ordered[~held].sort_index(), ordered[held].sort_index()


def logit_matrix(trained: Any, dataset: Dataset, chunk: int = 256) -> np.ndarray:
    """Ranking logits for every user x item from the model's ranking graph, fed as the scoring job
    feeds it (each user's latest ratings of the scoring-time history as context)."""
    vocab = dataset.vocab
    family = registry.get(trained.name)
    graph = family.graphs(trained.module, dataset.scale)["ranking"]
    context = user_context(dataset.history, vocab.n_users, vocab.n_items, family.context_length(trained.config))
    out = np.empty((vocab.n_users, vocab.n_items), np.float32)
    with torch.no_grad():
        for start in range(0, vocab.n_users, chunk):
            users = np.arange(start, min(start + chunk, vocab.n_users))
            feeds = build_feeds(family.ranking_inputs, users, None, context)
            out[start:start + len(users)] = graph(*(torch.as_tensor(feeds[n]) for n in family.ranking_inputs)).numpy()
    return out


def model_lists(trained: Any, dataset: Dataset, logits: np.ndarray, indptr: np.ndarray, seen: np.ndarray,
                n: int) -> tuple[np.ndarray, float]:
    """Each user's top-``n`` list by the scoring job's rules, the coherence rule included (its
    candidates rated by the torch model), -1 where a user has fewer unseen items; and the share
    of listed items predicted below the scale's midpoint."""
    family, scale = registry.get(trained.name), dataset.scale
    candidates, real = top_n(mask_seen(logits, indptr, seen), candidates_for(n))
    context = user_context(dataset.history, dataset.vocab.n_users, dataset.vocab.n_items,
                           family.context_length(trained.config))
    users = np.repeat(np.arange(candidates.shape[0]), candidates.shape[1])
    inputs = family.pair_inputs(users, candidates.reshape(-1), context)
    rated = scale.clipped_rating(predict_in_batches(trained.module, family.predict, inputs).numpy())
    rated = rated.reshape(candidates.shape)
    midpoint = None if dataset.implicit else scale.midpoint   # a low score is no dislike
    chosen, valid, picked = coherent_first(candidates, real, rated, midpoint, n)
    below = np.take_along_axis(rated, picked, 1)[valid] < scale.midpoint
    return np.where(valid, chosen, -1), float(below.mean()) if below.size and midpoint is not None else 0.0


Cut = Callable[[pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]
"""How a split's training data is cut into a fitting part and a validation part for tuning the
peers: the same way as the split itself (random for folds, each user's latest for temporal)."""


def random_cut(fraction: float, seed: int) -> Cut:
    """A seeded random ``fraction`` of the ratings held out."""
    def cut(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        held = np.zeros(len(frame), bool)
        held[np.random.default_rng(seed).permutation(len(frame))[:int(round(fraction * len(frame)))]] = True
        return frame[~held], frame[held]
    return cut


def temporal_cut(fraction: float) -> Cut:
    """Each user's latest ``fraction`` of ratings held out, as ``temporal_split``."""
    return lambda frame: temporal_split(frame, fraction)


def peer_scores(train: pd.DataFrame, dataset: Dataset, cut: Cut, seed: int, peers: tuple[Peer, ...],
                full_train: Interactions | None = None,
                relevant_stars: float = RELEVANT_STARS) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Each peer tuned on ``cut`` of the split's training data, then fitted on all of it
    (``full_train``: ``train`` in index space, when the caller has it): its scores for every
    user x item, and the settings chosen with their validation figures."""
    vocab, scale = dataset.vocab, dataset.scale
    fit_frame, validation_frame = cut(train)
    fit = Interactions.from_frame(fit_frame, vocab, scale)
    validation = Interactions.from_frame(validation_frame, vocab, scale)
    if full_train is None:
        full_train = Interactions.from_frame(train, vocab, scale)
    everything = interactions_matrix(full_train, vocab.n_users, vocab.n_items)
    scores, record = {}, {}
    for peer in peers:
        t = time.perf_counter()
        best, figures = tune(peer, fit, validation, vocab.n_users, vocab.n_items, relevant_stars, seed)
        scores[peer.name] = peer.scores(everything, best, seed)
        record[peer.name] = {"setting": best, "validation_ndcg_at_10": figures,
                             "seconds": round(time.perf_counter() - t, 1)}
    return scores, record


def evaluate_split(name: str, train: pd.DataFrame, test: pd.DataFrame, config: RunConfig,
                   use_surprise: bool, jobs: int | None = None, cut: Cut | None = None,
                   peers: tuple[Peer, ...] = (), feedback: str = EXPLICIT) -> dict[str, Any]:
    """Every model, baseline and top-N peer on one split (the peers tuned on ``cut``). On implicit
    feedback every held-out interaction is relevant, and there are no ratings to compare."""
    started = time.perf_counter()
    implicit = feedback != EXPLICIT
    dataset = build_dataset([train, test], config, np.random.default_rng(child_seed(config.seed, "split")),
                            **({"scale": IMPLICIT_SCALE, "feedback": feedback} if implicit else {}))
    vocab, test_i = dataset.vocab, dataset.test
    result: dict[str, Any] = {"name": name, "n_train": len(train), "n_test": len(test_i),
                              "cold_start_test_dropped": dataset.notes["cold_start_test_dropped"],
                              "rating": {}, "ranking": {}, "learning_curves": {}, "histograms": {},
                              **({"ranking_tests": {}} if implicit else {})}
    full_train = Interactions.from_frame(train, vocab, dataset.scale)
    scale = dataset.scale
    if not implicit:
        result["rating"]["global_mean"] = rating_errors(baselines.global_mean_predictions(full_train, test_i),
                                                        test_i.ratings, scale)
        result["rating"]["user_item_bias"] = rating_errors(
            baselines.bias_predictions(full_train, test_i, vocab.n_users, vocab.n_items), test_i.ratings, scale)
    if use_surprise and not implicit:
        warm = test[vocab.known(test)]
        for algorithm in baselines.SURPRISE_ALGORITHMS:
            t = time.perf_counter()
            predicted = baselines.surprise_predictions(algorithm, train, warm, config.seed, scale)
            result["rating"][f"surprise_{algorithm}"] = rating_errors(predicted, test_i.ratings, scale)
            log.info("%s surprise %s: RMSE %.4f (%.0f s)", name, algorithm,
                     result["rating"][f"surprise_{algorithm}"]["rmse_stars"], time.perf_counter() - t)

    indptr, seen = seen_csr(dataset.history, vocab.n_users)
    popularity = np.bincount(full_train.items, minlength=vocab.n_items).astype(np.float64)
    relevant = {"any_held_out": test_i} if implicit else \
        {"rated_4_plus": test_i.take(np.flatnonzero(test_i.ratings >= RELEVANT_STARS)), "any_held_out": test_i}
    candidates = {"most_popular": most_popular_scores(full_train, vocab.n_users, vocab.n_items),
                  "random": random_scores(vocab.n_users, vocab.n_items, np.random.default_rng(config.seed))}
    trained_models = train_models(dataset, config, jobs)
    for model_name, trained in zip(config.models, trained_models):
        result["ranking_tests" if implicit else "rating"][model_name] = trained.test_metrics
        result["learning_curves"][model_name] = trained.fit.epochs
        candidates[model_name] = logit_matrix(trained, dataset)
        result["histograms"][model_name] = trained.histogram
    if peers:
        scores, result["peers"] = peer_scores(train, dataset, cut or random_cut(0.2, config.seed), config.seed, peers,
                                              full_train, 0.0 if implicit else RELEVANT_STARS)
        candidates.update(scores)
    trained_by_name = dict(zip(config.models, trained_models))
    for label, scores in candidates.items():
        lists, below = {}, None
        for n in (TOP_K, RECALL_AT):
            if label in trained_by_name:
                lists[n], below = model_lists(trained_by_name[label], dataset, scores, indptr, seen, n)
            else:
                lists[n] = top_n_from_matrix(scores, indptr, seen, n)
        result["ranking"][label] = {}
        for kind, rel in relevant.items():
            metrics = ranking_metrics(lists[TOP_K], rel, vocab.n_items, popularity, TOP_K)
            metrics["recall_at_20"] = ranking_metrics(lists[RECALL_AT], rel, vocab.n_items, popularity,
                                                      TOP_K)["recall_at_20"]
            result["ranking"][label][kind] = metrics if below is None else {**metrics, "below_midpoint": below}
    result["seconds"] = round(time.perf_counter() - started, 1)
    summary = ", ".join(f"{m} {result['rating'][m]['rmse_stars']:.4f}" for m in config.models
                        if m in result["rating"]) or "none (implicit feedback)"
    kind = next(iter(relevant))
    log.info("%s done in %.0f s: RMSE %s; NDCG@10 (%s) %s", name, result["seconds"], summary, kind,
             {k: round(v[kind]["ndcg"], 4) for k, v in result["ranking"].items()})
    return result


def mean_over(splits: list[dict[str, Any]], section: str) -> dict[str, Any]:
    """Mean of every numeric metric across splits, per method (and relevance kind)."""
    def average(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            return {k: average([v[k] for v in values]) for k in values[0]}
        return float(np.mean(values))
    return average([s[section] for s in splits])


def run_evaluation(args: argparse.Namespace) -> dict[str, Any]:
    config = make_config(args)
    jobs = jobs_option(args.jobs)
    use_surprise = not args.no_surprise and baselines.surprise_available()
    if not args.no_surprise and not use_surprise:
        log.warning("Surprise is not installed (pip install '.[eval]'); its baselines are left out")
    peers = () if args.no_peers else tuple(p for p in PEERS if not p.needs_implicit or implicit_available())
    if not args.no_peers and len(peers) < len(PEERS):
        log.warning("implicit is not installed (pip install '.[eval]'); its ALS, BPR and item-kNN are left out")
    report: dict[str, Any] = {"created_utc": datetime.now(timezone.utc).isoformat(), "seed": args.seed,
                              "top_k": TOP_K, "relevant_stars": RELEVANT_STARS,
                              "untuned_reference_rmse_unit": {m: registry.get(m).untuned_reference_rmse
                                                              for m in config.models},
                              "config": config.to_dict(), "protocols": {}}
    options = RatingsOptions(feedback=args.feedback)
    report["feedback"] = args.feedback
    if args.train_file:
        if len(args.train_file) != len(args.test_file or []):
            raise UsageError("--train-file and --test-file: give them in pairs, as many of each")
        splits = [(f"{Path(tr).name}/{Path(te).name}", read_ratings(tr, options).frame,
                   read_ratings(te, options).frame) for tr, te in zip(args.train_file, args.test_file)]
    else:
        frame = read_ratings(DataSource(data_dir=args.data_dir, cache_dir=args.cache_dir).ratings_files()[0],
                             options).frame
        splits = kfold_splits(frame, args.folds, args.seed) if args.folds > 1 else []
    if splits:
        cut = random_cut(1 / max(args.folds, 2), args.seed)
        results = [evaluate_split(name, tr, te, config, use_surprise, jobs, cut, peers, args.feedback)
                   for name, tr, te in splits]
        report["protocols"]["cross_validation"] = {"splits": results, "mean_rating": mean_over(results, "rating"),
                                                   "mean_ranking": mean_over(results, "ranking")}
    if args.temporal_fraction > 0 and not args.train_file:
        train, test = temporal_split(frame, args.temporal_fraction)
        result = evaluate_split("temporal", train, test, config, use_surprise, jobs,
                                temporal_cut(args.temporal_fraction), peers, args.feedback)
        report["protocols"]["temporal"] = {"splits": [result], "mean_rating": result["rating"],
                                           "mean_ranking": result["ranking"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(strict_json.dumps(report, indent=1, sort_keys=True))
    tmp.replace(args.out)
    print_summary(report)
    print(f"written: {args.out}")
    return report


def print_summary(report: dict[str, Any]) -> None:
    for protocol, body in report["protocols"].items():
        print(f"\n{protocol}: mean over {len(body['splits'])} split(s)")
        if body["mean_rating"]:
            print(f"  {'method':22s} {'RMSE':>7s} {'MAE':>7s} {'RMSE[0,1]':>9s}")
        for method, m in body["mean_rating"].items():
            print(f"  {method:22s} {m['rmse_stars']:7.4f} {m['mae_stars']:7.4f} {m['rmse_unit']:9.4f}")
        kind = next(iter(next(iter(body["mean_ranking"].values()))))
        print(f"  {'top-10 (' + kind + ')':22s} {'P':>6s} {'R':>6s} {'NDCG':>6s} {'MAP':>6s} {'HR':>6s} {'R@20':>6s} "
              f"{'cov':>6s} {'pop':>6s}")
        for method, kinds in body["mean_ranking"].items():
            m = kinds[kind]
            print(f"  {method:22s} {m['precision']:6.4f} {m['recall']:6.4f} {m['ndcg']:6.4f} {m['map']:6.4f} "
                  f"{m['hit_rate']:6.4f} {m['recall_at_20']:6.4f} {m['coverage']:6.4f} {m['mean_popularity']:6.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5, help="seeded random folds (default: %(default)s; 1 = none)")
    parser.add_argument("--train-file", action="append", help="explicit training file; repeat, paired with --test-file")
    parser.add_argument("--test-file", action="append", help="explicit test file; repeat, paired with --train-file")
    parser.add_argument("--temporal-fraction", type=float, default=0.2,
                        help="share of each user's latest ratings held out (default: %(default)s; 0 = skip)")
    parser.add_argument("--data-dir", type=Path, help="an ml-100k folder instead of the download")
    parser.add_argument("--feedback", choices=FEEDBACK_KINDS, default=EXPLICIT,
                        help="implicit: every rating read as one interaction, every held-out one relevant, "
                             "no rating errors (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_DATA_DIR, help="download cache (default: %(default)s)")
    try:
        add_training_options(parser)   # lists every registered family's options: installed ones load here
    except RecJobError as exc:
        return setup_failure(exc)
    parser.add_argument("--no-surprise", action="store_true", help="leave out the Surprise baselines")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave out the top-N peers (EASE, and implicit's ALS, BPR and item-kNN)")
    parser.add_argument("--out", type=Path, default=DEFAULT_EVALUATION, help="JSON output (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    return run_cli(lambda: run_evaluation(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
