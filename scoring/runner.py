"""One scoring run: the engine writes every chosen table of every model, then the run is checked,
recorded, compared with the previous one and published atomically.

The engines (``ENGINES``) write the tables: ``scoring.local_engine`` in this process,
``scoring.spark_engine`` in Spark's tasks; what happens before and after is the same for both.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from contract import strict_json
from contract.bundle_format import MANIFEST
from contract.checksums import sha256_file
from contract.errors import PublishError, StoreError, UsageError
from contract.failpoints import failpoint
from contract.publish import BUNDLE_IN_USE
from contract.roots import PublishRoot, open_root
from contract.store import Location
from contract.tables import RUN_SCHEMA_VERSION

from .bundle import Bundle, load_bundle, read_manifest
from .bundle_fetch import local_bundle
from .drift import check_limits, log_drift, run_drift
from .options import DEFAULT_CHUNK_PAIRS, ENGINES, RANKING_CHUNK_PAIRS, ScoringOptions
from .results import ModelResult
from .rules import ItemRules, load_rules, write_rule_ids
from .run_manifest import run_manifest, verify_tables
from .tables import chosen

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CHUNK_PAIRS", "ENGINES", "RANKING_CHUNK_PAIRS", "ScoringOptions", "run_scoring"]

Engine = Callable[..., tuple[dict[str, ModelResult], dict[str, Any]]]
"""What an engine module's ``score`` is: ``score(bundle, options, settings, staging, run_id,
finished=None)`` (``scoring.local_engine`` says what it does)."""


def engine(name: str) -> Engine:
    """The ``score`` function of the engine called ``name``, imported when first asked for."""
    return importlib.import_module(f"scoring.{name}_engine").score


def validate_options(options: ScoringOptions, bundle: Bundle) -> None:
    """UsageError for options that cannot work with this bundle."""
    if options.top_n < 1:
        raise UsageError(f"--top-n: expected a positive integer, got {options.top_n}")
    if options.similar_k < 1:
        raise UsageError(f"--similar-k: expected a positive integer, got {options.similar_k}")
    for table in chosen(options.tables):
        for model in bundle.models:
            if (why := table.unavailable(bundle, model)) is not None:
                raise UsageError(f"--tables {table.name}: {why}")
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


def inputs_hash(bundle: Bundle, options: ScoringOptions, rules: ItemRules) -> str:
    """Identity of what determines a run's table contents: same hash, same tables."""
    tables = chosen(options.tables)
    payload = {"bundle_manifest": sha256_file(bundle.path / MANIFEST), "models": bundle.models,
               "tables": [t.name for t in tables], "top_n": options.top_n, "similar_k": options.similar_k,
               "rules": {k: v["sha256"] for k, v in rules.record.items() if isinstance(v, dict)},
               "run_schema": RUN_SCHEMA_VERSION,
               "table_schemas": {t.name: t.schema(bundle).to_string() for t in tables}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def run_scoring(options: ScoringOptions) -> Location:
    """Score, verify and publish one run; returns where it was published (a local directory, or
    the URI of its folder on an object store)."""
    started = time.perf_counter()
    options = dataclasses.replace(options, tables=tuple(t.name for t in chosen(options.tables)))
    bundle_dir = local_bundle(options.bundle)
    bundle = load_bundle(bundle_dir, chosen_models(options, bundle_dir))
    validate_options(options, bundle)
    rules, rule_ids = load_rules(options.exclude_items, options.candidates, bundle.item_ids)
    if options.top_n > bundle.n_items:
        log.info("--top-n %d: the catalogue holds %d items, so each list holds at most %d", options.top_n,
                 bundle.n_items, bundle.n_items)
        options = dataclasses.replace(options, top_n=bundle.n_items)
    failpoint("after_bundle_load")
    root = open_root(options.output_root)
    settings = options.settings(rules)
    digest = inputs_hash(bundle, options, rules)
    load_seconds = time.perf_counter() - started
    # The note and the marker are read by export's retention, which must not remove a bundle a run still reads.
    with root.lock(options.wait, "wait for it to finish or pass --wait", {"bundle": bundle.path.resolve().name}):
        failpoint("after_lock")
        run_id, created = root.new_name(datetime.now(timezone.utc), digest, "microsecond")
        root.clean()
        previous = root.latest()
        staging = root.staging(run_id)
        (staging / BUNDLE_IN_USE).write_text(bundle.path.resolve().name)
        failpoint("after_staging_created")
        try:
            results, engine_record = engine(options.engine)(bundle, options, settings, staging, run_id,
                                                            finished=root.early_sender(staging, run_id))
            failpoint("after_all_models")
            counts = verify_tables(staging, bundle, options.tables, settings)
            failpoint("after_verify")
            write_rule_ids(staging, rule_ids, bundle.item_id_array.type)
            drift = run_drift(staging, previous, bundle, options.tables)
            log_drift(drift)
            manifest = run_manifest(run_id, created, digest, bundle, options, settings, results, counts, staging,
                                    {"load": load_seconds, "total": time.perf_counter() - started}, drift)
            manifest.update(engine_record)
            check_limits(drift, options.limits)
            (staging / "manifest.json").write_text(strict_json.dumps(manifest, indent=2, sort_keys=True))
            failpoint("after_manifest")
            if options.report:
                _write_report(staging)
            (staging / BUNDLE_IN_USE).unlink()
            final = root.publish(staging, run_id)
        except OSError as exc:
            root.discard(staging)
            raise PublishError(f"{staging}: writing the run failed, nothing was published ({exc})") from exc
        except BaseException:
            root.discard(staging)
            raise
        _prune(root, options.keep)
    log.info("published %s (%.2f s)", final, time.perf_counter() - started,
             extra={"stage": "published", "figures": {"run_id": run_id, "seconds": round(time.perf_counter() - started, 3)}})
    return final


def _prune(root: PublishRoot, keep: int) -> None:
    """Retention after a publish; a failure to remove old runs is reported, the run stands."""
    try:
        root.prune(keep)
    except (OSError, StoreError) as exc:
        log.warning("retention: could not remove old runs under %s (%s); they are left for the next run",
                    root.location, exc)


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
