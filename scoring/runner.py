"""One scoring run: every user x item for each model, top-N, Parquet, checks, atomic publish.

Users are scored in chunks. The main thread runs onnxruntime on the next chunk while a worker
thread selects top-N and writes the chunks before it, handed over in groups of ``SINK_PAIRS``,
so memory is set by the chunk size, not the catalogue.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pyarrow as pa
import pyarrow.parquet as pq

from .bundle import MANIFEST, PARITY_TOLERANCE, Bundle, load_bundle
from .checksums import sha256_file
from .engine import ModelScorer, Scores, available_cpus
from .errors import PublishError, UsageError, VerificationError
from .failpoints import failpoint
from .parity import RANK_TOLERANCE_RULE, check_parity
from .publish import RootLock, new_staging_dir, prepare_root, publish, remove_stale_staging
from .schema import MODEL_NAMES, SCHEMAS, TABLE_NAMES
from .topn import mask_seen, top_n
from .writer import PartitionWriter, arrow_array, table_file

log = logging.getLogger(__name__)

RUN_SCHEMA_VERSION = 1
DEFAULT_CHUNK_PAIRS = 16_384
"""User-item pairs per onnxruntime call for the all-items graphs: bounds their per-pair
intermediates ([B, H, n_items] for the dense net and the LSTM), which run fastest in pieces of
about this size (README, "Speed and memory")."""
SINK_PAIRS = 65_536
"""Pairs the table-writer thread takes at a time: consecutive onnxruntime chunks are handed over
together until they reach this many, so top-N selection and Parquet batches run over a few tens
of users per call, not a few (at 100K, 9 users per call spent about half of top-N's time in
per-call overhead). Memory stays bounded by this and the chunk size."""
RANKING_CHUNK_PAIRS = 4_194_304
"""User-item pairs per call for the ranking graphs of top-N-only runs: one matrix product, which
needs many users per call to run at speed (at 20M, 1 user per call runs it at a fraction); its
[B, n_items] output is the only per-pair tensor."""


@dataclass(frozen=True)
class ScoringOptions:
    """What a scoring run reads, computes and writes."""

    bundle: Path
    output_root: Path
    top_n: int = 10
    models: tuple[str, ...] = MODEL_NAMES
    tables: tuple[str, ...] = TABLE_NAMES
    chunk_pairs: int | None = None
    """Pairs per onnxruntime call; None: ``RANKING_CHUNK_PAIRS`` for top-N-only runs, else
    ``DEFAULT_CHUNK_PAIRS``."""
    threads: int = field(default_factory=available_cpus)
    device: str = "cpu"
    wait: bool = False
    report: bool = True
    """Write report.html into the run (plots need matplotlib)."""


@dataclass
class ModelResult:
    """Figures of one model's pass over all users."""

    rows: dict[str, int] = field(default_factory=dict)
    parity_max_abs_diff: float = 0.0
    """Largest |onnxruntime - torch| of the ratings (scores on [0, 1]) at the reference pairs."""
    parity_rank_max_abs_diff: float = 0.0
    """The same for the ranking logits."""
    parity_pairs: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"onnxruntime": 0.0, "onnxruntime_pairs": 0.0,
                                                               "top_n": 0.0, "write": 0.0})


def validate_options(options: ScoringOptions, bundle: Bundle) -> None:
    """UsageError for options that cannot work with this bundle."""
    if not 1 <= options.top_n <= bundle.n_items:
        raise UsageError(f"--top-n: expected an integer from 1 to the catalogue size {bundle.n_items}, "
                         f"got {options.top_n}")
    if not options.tables:
        raise UsageError(f"--tables: expected at least one of {','.join(TABLE_NAMES)}")
    if (options.chunk_pairs is not None and options.chunk_pairs < 1) or options.threads < 1:
        raise UsageError("--chunk-pairs and --threads: expected positive integers")


def expected_rows(bundle: Bundle, table: str, top_n: int) -> int:
    """Rows a complete table partition must hold for one model."""
    if table == "predictions":
        return bundle.n_users * bundle.n_items
    unseen = bundle.n_items - np.diff(bundle.seen_indptr)
    return int(np.minimum(unseen, top_n).sum())


def ranking_only(options: ScoringOptions) -> bool:
    """Whether the run writes top-N lists only, so the ranking graphs suffice."""
    return "predictions" not in options.tables


def chunk_pairs(options: ScoringOptions) -> int:
    """Pairs per onnxruntime call for this run."""
    if options.chunk_pairs is not None:
        return options.chunk_pairs
    return RANKING_CHUNK_PAIRS if ranking_only(options) else DEFAULT_CHUNK_PAIRS


def _chunks(n_users: int, n_items: int, chunk_pairs: int) -> list[tuple[int, int]]:
    size = max(1, chunk_pairs // max(n_items, 1))
    return [(s, min(s + size, n_users)) for s in range(0, n_users, size)]


class _ChunkSink:
    """Turns one chunk of scores into table rows (runs on the worker thread)."""

    def __init__(self, bundle: Bundle, options: ScoringOptions, writers: dict[str, PartitionWriter],
                 result: ModelResult, scorer: ModelScorer) -> None:
        self.bundle, self.options, self.writers, self.result, self.scorer = bundle, options, writers, result, scorer

    def __call__(self, start: int, stop: int, scores: Scores) -> None:
        b = self.bundle
        users = b.user_ids[start:stop]
        if "predictions" in self.writers:
            t = time.perf_counter()
            self.writers["predictions"].write({
                "user_id": arrow_array(np.repeat(users, b.n_items)),
                "item_id": arrow_array(np.tile(b.item_ids, stop - start)),
                "prediction": arrow_array(scores.rating.reshape(-1)),
            })
            self.result.seconds["write"] += time.perf_counter() - t
        if "recommendations" in self.writers:
            t = time.perf_counter()
            indptr = b.seen_indptr[start:stop + 1]
            # The rank chunk is this sink's alone and its seen entries are never read again.
            masked = mask_seen(scores.rank, indptr - indptr[0], b.seen_items[indptr[0]:indptr[-1]], copy=False)
            items, valid = top_n(masked, self.options.top_n)
            rows, ranks = np.nonzero(valid)
            chosen = items[rows, ranks]
            self.result.seconds["top_n"] += time.perf_counter() - t
            if scores.rating is not None:
                rating = scores.rating[rows, chosen]
            else:
                t = time.perf_counter()
                score, rating = self.scorer.rate_pairs(start + rows, chosen)
                _check_finite(self.scorer.model, b, "score", score, start + rows, chosen)
                self.result.seconds["onnxruntime_pairs"] += time.perf_counter() - t
            columns = {
                "user_id": arrow_array(users[rows]),
                "rank": arrow_array((ranks + 1).astype(np.int16)),
                "item_id": arrow_array(b.item_ids[chosen]),
                "prediction": arrow_array(rating),
                "score": arrow_array(masked[rows, chosen]),
            }
            t = time.perf_counter()
            self.writers["recommendations"].write(columns)
            self.result.seconds["write"] += time.perf_counter() - t


def _check_finite(model: str, bundle: Bundle, output: str, values: np.ndarray,
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


def _reference_index(bundle: Bundle, model: str) -> tuple[np.ndarray, np.ndarray]:
    ref = bundle.references[model]
    order = np.argsort(ref.users, kind="stable")
    return order, ref.users[order]


def score_model(bundle: Bundle, model: str, options: ScoringOptions, run_dir: Path,
                pool: ThreadPoolExecutor) -> ModelResult:
    """Score all users with one model, writing its table partitions into ``run_dir``."""
    scorer = ModelScorer.open(bundle, model, options.threads, options.device, ranking_only(options))
    result = ModelResult()
    writers = {t: PartitionWriter(run_dir, t, model) for t in options.tables}
    sink = _ChunkSink(bundle, options, writers, result, scorer)
    ref = bundle.references[model]
    order, sorted_users = _reference_index(bundle, model)
    ours = {"score": np.full(len(ref.users), np.nan, np.float32), "rank": np.full(len(ref.users), np.nan, np.float32)}
    all_items = np.arange(bundle.n_items)
    pending: deque[Future] = deque()
    held: list[Scores] = []  # consecutive chunks not yet handed to the writer thread
    held_from = 0
    try:
        for start, stop in _chunks(bundle.n_users, bundle.n_items, chunk_pairs(options)):
            t = time.perf_counter()
            users = np.arange(start, stop, dtype=np.int64)
            scores = scorer.score(users)
            result.seconds["onnxruntime"] += time.perf_counter() - t
            for output in ("score", "rank"):
                values = getattr(scores, output)
                if values is not None:
                    _check_finite(model, bundle, output, values, users[:, None], all_items[None, :])
            lo, hi = np.searchsorted(sorted_users, [start, stop])
            picked = order[lo:hi]
            ours["rank"][picked] = scores.rank[ref.users[picked] - start, ref.items[picked]]
            if scores.score is not None:
                ours["score"][picked] = scores.score[ref.users[picked] - start, ref.items[picked]]
            held.append(scores)
            if stop == bundle.n_users or (stop - held_from) * bundle.n_items >= SINK_PAIRS:
                pending.append(pool.submit(sink, held_from, stop, Scores.concat(held)))
                held, held_from = [], stop
            failpoint("mid_model_first_chunk")
            while len(pending) > 1:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
        for writer in writers.values():
            writer.close()
    finally:
        for future in pending:
            future.cancel()
    if scorer.ranking_only:  # the reference pairs' ratings come from the pairwise graph, as the table's do
        ours["score"] = scorer.rate_pairs(ref.users, ref.items)[0]
    result.rows = {t: w.rows for t, w in writers.items()}
    result.parity_pairs = int(len(ref.users))
    raw = (bundle.user_ids[ref.users], bundle.item_ids[ref.items])
    context = f"scoring parity against the bundle's torch reference ({bundle.path})"
    result.parity_max_abs_diff = check_parity(model, ref.scores, ours["score"], *raw, context)
    result.parity_rank_max_abs_diff = check_parity(model, ref.ranks, ours["rank"], *raw, context + ", rank output",
                                                   logits=True)
    return result


def verify_tables(run_dir: Path, bundle: Bundle, options: ScoringOptions) -> dict[str, dict[str, int]]:
    """Re-read every written file's footer: schema and row count must be what the run promised."""
    counts: dict[str, dict[str, int]] = {}
    for table in options.tables:
        counts[table] = {}
        for model in options.models:
            path = table_file(run_dir, table, model)
            meta = pq.read_metadata(path)
            schema = pq.read_schema(path).remove_metadata()
            if not schema.equals(SCHEMAS[table].remove_metadata()):
                raise VerificationError(f"{path}: schema {schema} differs from the {table} schema")
            want = expected_rows(bundle, table, options.top_n)
            if meta.num_rows != want:
                raise VerificationError(f"{path}: holds {meta.num_rows} rows; expected {want}")
            counts[table][model] = meta.num_rows
    return counts


def inputs_hash(bundle: Bundle, options: ScoringOptions) -> str:
    """Identity of what determines a run's table contents: same hash, same tables."""
    payload = {"bundle_manifest": sha256_file(bundle.path / MANIFEST), "models": list(options.models),
               "tables": list(options.tables), "top_n": options.top_n, "run_schema": RUN_SCHEMA_VERSION,
               "table_schemas": {t: SCHEMAS[t].to_string() for t in options.tables}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def run_scoring(options: ScoringOptions) -> Path:
    """Score, verify and publish one run; returns the published run directory."""
    started = time.perf_counter()
    bundle = load_bundle(options.bundle, list(options.models))
    validate_options(options, bundle)
    failpoint("after_bundle_load")
    root = prepare_root(options.output_root)
    created = datetime.now(timezone.utc)
    digest = inputs_hash(bundle, options)
    run_id = f"{created:%Y%m%dT%H%M%S%fZ}-{digest[:10]}"
    load_seconds = time.perf_counter() - started
    with RootLock(root, wait=options.wait):
        failpoint("after_lock")
        remove_stale_staging(root)
        staging = new_staging_dir(root, run_id)
        failpoint("after_staging_created")
        try:
            results: dict[str, ModelResult] = {}
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="table-writer") as pool:
                for model in options.models:
                    t = time.perf_counter()
                    results[model] = score_model(bundle, model, options, staging, pool)
                    failpoint("after_first_model")
                    results[model].seconds["total"] = time.perf_counter() - t
                    log.info("%s: %s rows, parity %.2e (ratings), %.2e (ranking logits) over %d pairs, %.2f s",
                             model, results[model].rows, results[model].parity_max_abs_diff,
                             results[model].parity_rank_max_abs_diff, results[model].parity_pairs,
                             results[model].seconds["total"])
            failpoint("after_all_models")
            counts = verify_tables(staging, bundle, options)
            failpoint("after_verify")
            manifest = _run_manifest(run_id, created, digest, bundle, options, results, counts, staging,
                                     load_seconds, time.perf_counter() - started)
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
            failpoint("after_manifest")
            if options.report:
                _write_report(staging)
            final = publish(staging, root, run_id)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise PublishError(f"{staging}: writing the run failed, nothing was published ({exc})") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info("published %s (%.2f s)", final, time.perf_counter() - started)
    return final


def _write_report(run_dir: Path) -> None:
    """The HTML report is a convenience: a failure to draw it is logged, never fatal to the tables."""
    from .report import write_report
    t = time.perf_counter()
    try:
        write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - any plotting failure must not block publishing
        log.warning("report not written: %s", exc)
        return
    log.info("report written (%.2f s)", time.perf_counter() - t)


def _run_manifest(run_id: str, created: datetime, digest: str, bundle: Bundle, options: ScoringOptions,
                  results: dict[str, ModelResult], counts: dict[str, dict[str, int]], staging: Path,
                  load_seconds: float, total_seconds: float) -> dict[str, Any]:
    files = {p.relative_to(staging).as_posix(): sha256_file(p)
             for p in sorted(staging.rglob("*.parquet"))}
    return {
        "run_schema_version": RUN_SCHEMA_VERSION,
        "run_id": run_id,
        "created_utc": created.isoformat(),
        "inputs_hash": digest,
        "bundle": {"path": str(bundle.path.resolve()), "bundle_id": bundle.bundle_id,
                   "manifest_sha256": sha256_file(bundle.path / MANIFEST)},
        "top_n": options.top_n,
        "models": list(options.models),
        "tables": list(options.tables),
        "n_users": bundle.n_users,
        "n_items": bundle.n_items,
        "row_counts": counts,
        "parity": {m: {"pairs": r.parity_pairs, "max_abs_diff": r.parity_max_abs_diff,
                       "rank_max_abs_diff": r.parity_rank_max_abs_diff, "tolerance": PARITY_TOLERANCE,
                       "rank_tolerance": RANK_TOLERANCE_RULE} for m, r in results.items()},
        "seconds": {"load": round(load_seconds, 4), "total": round(total_seconds, 4),
                    **{m: {k: round(v, 4) for k, v in r.seconds.items()} for m, r in results.items()}},
        "threads": options.threads,
        "device": options.device,
        "versions": {"onnxruntime": onnxruntime.__version__, "pyarrow": pa.__version__,
                     "numpy": np.__version__},
        "files": files,
        "ranking": "recommendations are ranked by the model's 'rank' output (logit that the user rates the "
                   "item at all); ties by smaller item_id",
    }
