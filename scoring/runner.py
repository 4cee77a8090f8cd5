"""One scoring run: every user x item for each model, top-N, Parquet, checks, atomic publish.

Each model's pass (``model_pass``) runs here, over all users, or in Spark's tasks, over spans of
them (``spark_engine``); either way the run is verified and published here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


from contract import strict_json
from contract.bundle_format import MANIFEST
from contract.checksums import sha256_file
from contract.errors import PublishError, UsageError
from contract.failpoints import failpoint
from contract.machine import available_cpus
from contract.publish import (BUNDLE_IN_USE, RootLock, new_name, new_staging_dir, prepare_root, publish,
                              remove_stale_staging, resolve_latest)
from contract.retention import DEFAULT_KEEP, prune
from contract.tables import RUN_SCHEMA_VERSION, TABLE_NAMES

from .bundle import Bundle, load_bundle, read_manifest
from .drift import DriftLimits, check_limits, log_drift, run_drift
from .engine import ModelScorer
from .model_pass import PassSettings, score_span
from .run_manifest import ModelResult, run_manifest, verify_tables
from .spark_attempts import attempts
from .spark_engine import JOB_GROUP, SparkOptions, preflight, task_spec, write_tables
from .spark_engine import session as spark_session
from .writer import PartitionWriter, provenance

log = logging.getLogger(__name__)

DEFAULT_CHUNK_PAIRS = 16_384
"""User-item pairs per onnxruntime call for the all-items graphs: bounds their per-pair
intermediates ([B, H, n_items] for the dense net and the LSTM), which run fastest in pieces of
about this size (docs/performance.md)."""
ENGINES = ("local", "spark")
"""Where a run's pairs are scored."""
RANKING_CHUNK_PAIRS = 4_194_304
"""User-item pairs per call for the ranking graphs of top-N-only runs: one matrix product, which
needs many users per call to run at speed; its [B, n_items] output is the only per-pair tensor."""


@dataclass(frozen=True)
class ScoringOptions:
    """What a scoring run reads, computes and writes."""

    bundle: Path
    output_root: Path
    top_n: int = 10
    models: tuple[str, ...] | None = None
    """Models to score; None: every model in the bundle."""
    tables: tuple[str, ...] = TABLE_NAMES
    chunk_pairs: int | None = None
    """Pairs per onnxruntime call; None: ``RANKING_CHUNK_PAIRS`` for top-N-only runs, else
    ``DEFAULT_CHUNK_PAIRS``."""
    threads: int = field(default_factory=available_cpus)
    device: str = "cpu"
    wait: bool = False
    report: bool = True
    """Write report.html into the run (plots need matplotlib)."""
    engine: str = "local"
    """Where the pairs are scored: "local" (this process) or "spark" (``scoring.spark_engine``)."""
    spark: SparkOptions = SparkOptions()
    keep: int = DEFAULT_KEEP
    """Published runs kept under the output root after this one (0: all)."""
    limits: DriftLimits = DriftLimits()

    @property
    def ranking_only(self) -> bool:
        """Whether the run writes top-N lists only, so the ranking graphs suffice."""
        return "predictions" not in self.tables

    @property
    def pairs_per_call(self) -> int:
        if self.chunk_pairs is not None:
            return self.chunk_pairs
        return RANKING_CHUNK_PAIRS if self.ranking_only else DEFAULT_CHUNK_PAIRS

    @property
    def settings(self) -> PassSettings:
        return PassSettings(self.top_n, self.pairs_per_call)


def validate_options(options: ScoringOptions, bundle: Bundle) -> None:
    """UsageError for options that cannot work with this bundle."""
    if options.top_n < 1:
        raise UsageError(f"--top-n: expected a positive integer, got {options.top_n}")
    unknown = sorted(set(options.tables) - set(TABLE_NAMES))
    if not options.tables or unknown:
        raise UsageError(f"--tables: unknown name {unknown or 'none'}; expected a comma-separated subset of "
                         f"{','.join(TABLE_NAMES)}")
    if (options.chunk_pairs is not None and options.chunk_pairs < 1) or options.threads < 1:
        raise UsageError("--chunk-pairs and --threads: expected positive integers")
    if options.keep < 0:
        raise UsageError(f"--keep: expected 0 (keep all) or a positive integer, got {options.keep}")
    for name, limit in (("--max-topn-change", options.limits.max_topn_change),
                        ("--max-prediction-change", options.limits.max_prediction_change)):
        if limit is not None and not limit >= 0:
            raise UsageError(f"{name}: expected a number of at least 0, got {limit}")
    if options.engine not in ENGINES:
        raise UsageError(f"--engine: expected one of {', '.join(ENGINES)}, got {options.engine!r}")


def chosen_models(options: ScoringOptions, bundle_path: Path) -> list[str] | None:
    """The ``--models`` the bundle holds, in the bundle's order; None for all of them."""
    if options.models is None:
        return None
    available = read_manifest(bundle_path)["model_names"]
    unknown = [m for m in options.models if m not in available]
    if unknown or not options.models:
        raise UsageError(f"--models: unknown name {unknown or 'none'}; expected a comma-separated subset of "
                         f"{','.join(available)} (the models in {bundle_path})")
    return [m for m in available if m in options.models]


def score_model(bundle: Bundle, model: str, options: ScoringOptions, run_dir: Path, run_id: str,
                pool: ThreadPoolExecutor) -> ModelResult:
    """Score all users with one model, writing its table partitions into ``run_dir``."""
    scorer = ModelScorer.open(bundle.graphs(model), bundle.context, options.threads, options.device,
                              options.ranking_only)
    writers = {t: PartitionWriter(run_dir, t, model, bundle.table_schema(t),
                                  metadata=provenance(run_id, bundle.bundle_id, model, bundle.model_version(model), t))
               for t in options.tables}
    return score_span(bundle, scorer, writers, options.settings, pool)


def inputs_hash(bundle: Bundle, options: ScoringOptions) -> str:
    """Identity of what determines a run's table contents: same hash, same tables."""
    payload = {"bundle_manifest": sha256_file(bundle.path / MANIFEST), "models": bundle.models,
               "tables": list(options.tables), "top_n": options.top_n, "run_schema": RUN_SCHEMA_VERSION,
               "table_schemas": {t: bundle.table_schema(t).to_string() for t in options.tables}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _score_with_spark(bundle: Bundle, options: ScoringOptions, staging: Path,
                      run_id: str) -> tuple[dict[str, ModelResult], dict[str, Any]]:
    """The tables written by Spark's tasks, each checking its users' reference pairs, and what
    Spark did with the tasks (failed attempts, retried tasks, lost executors)."""
    t = time.perf_counter()
    spark = spark_session(options.spark)
    seconds = {"spark_start": time.perf_counter() - t}
    spec = task_spec(spark, bundle, options.tables, options.settings, staging, run_id, options.spark.ship_bundle)
    t = time.perf_counter()
    preflight(spark, spec.bundle_path)
    seconds["spark_preflight"] = time.perf_counter() - t
    t = time.perf_counter()
    results = write_tables(spark, bundle, spec, options.spark.writer)
    seconds["spark_jobs"] = time.perf_counter() - t
    for result in results.values():
        result.seconds.update(seconds)
    log.info("spark: %s written in %.2f s (session start %.2f s, preflight %.2f s)", ", ".join(options.tables),
             seconds["spark_jobs"], seconds["spark_start"], seconds["spark_preflight"])
    record = attempts(spark, JOB_GROUP).record()
    if record["failed_task_attempts"] or record["lost_executors"]:
        log.warning("spark: %d task attempt(s) failed and were retried (tasks %s); %s executor(s) lost",
                    record["failed_task_attempts"], record["retried_tasks"], record["lost_executors"],
                    extra={"stage": "spark", "figures": record})
    return results, {"spark": record}


def _score_all(bundle: Bundle, options: ScoringOptions, staging: Path,
               run_id: str) -> tuple[dict[str, ModelResult], dict[str, Any]]:
    results: dict[str, ModelResult] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="table-writer") as pool:
        for model in bundle.models:
            t = time.perf_counter()
            results[model] = score_model(bundle, model, options, staging, run_id, pool)
            failpoint("after_first_model")
            results[model].seconds["total"] = time.perf_counter() - t
            r = results[model]
            log.info("%s: %s rows, parity %.2e (ratings), %.2e (logits) over %d pairs, %.2f s",
                     model, r.rows, r.parity_max_abs_diff, r.parity_logit_max_abs_diff, r.parity_pairs,
                     r.seconds["total"])
    return results, {}


def run_scoring(options: ScoringOptions) -> Path:
    """Score, verify and publish one run; returns the published run directory."""
    started = time.perf_counter()
    bundle = load_bundle(options.bundle, chosen_models(options, Path(options.bundle)))
    validate_options(options, bundle)
    if options.top_n > bundle.n_items:
        log.info("--top-n %d: the catalogue holds %d items, so each list holds at most %d", options.top_n,
                 bundle.n_items, bundle.n_items)
        options = dataclasses.replace(options, top_n=bundle.n_items)
    failpoint("after_bundle_load")
    root = prepare_root(options.output_root)
    digest = inputs_hash(bundle, options)
    load_seconds = time.perf_counter() - started
    with RootLock(root, wait=options.wait):
        failpoint("after_lock")
        run_id, created = new_name(root, datetime.now(timezone.utc), digest, "microsecond")
        remove_stale_staging(root)
        previous = resolve_latest(root)
        staging = new_staging_dir(root, run_id)
        # Read by export's retention, which must not remove the bundle a run is still reading.
        (staging / BUNDLE_IN_USE).write_text(bundle.path.resolve().name)
        failpoint("after_staging_created")
        try:
            score = _score_with_spark if options.engine == "spark" else _score_all
            results, engine_record = score(bundle, options, staging, run_id)
            failpoint("after_all_models")
            counts = verify_tables(staging, bundle, options.tables, options.top_n)
            failpoint("after_verify")
            drift = run_drift(staging, previous, bundle.models, options.tables, bundle.n_items)
            log_drift(drift)
            manifest = run_manifest(run_id, created, digest, bundle, options, results, counts, staging,
                                    {"load": load_seconds, "total": time.perf_counter() - started}, drift)
            manifest.update(engine_record)
            check_limits(drift, options.limits)
            (staging / "manifest.json").write_text(strict_json.dumps(manifest, indent=2, sort_keys=True))
            failpoint("after_manifest")
            if options.report:
                _write_report(staging)
            (staging / BUNDLE_IN_USE).unlink()
            final = publish(staging, root, run_id)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise PublishError(f"{staging}: writing the run failed, nothing was published ({exc})") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _prune(root, options.keep)
    log.info("published %s (%.2f s)", final, time.perf_counter() - started,
             extra={"stage": "published", "figures": {"run_id": run_id, "seconds": round(time.perf_counter() - started, 3)}})
    return final


def _prune(root: Path, keep: int) -> None:
    """Retention after a publish; a failure to remove old runs is reported, the run stands."""
    try:
        prune(root, keep)
    except OSError as exc:
        log.warning("retention: could not remove old runs under %s (%s); they are left for the next run", root, exc)


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
