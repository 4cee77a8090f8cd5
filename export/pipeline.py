"""The export pipeline from configured options to a published bundle: data, training, export,
reusing an up-to-date bundle instead of retraining."""
from __future__ import annotations

import dataclasses
import logging
from contextlib import closing
from pathlib import Path

import numpy as np

from contract.errors import BundleError, DataError, GateRefused, UsageError
from contract.publish import resolve_latest
from contract.roots import StoreRoot
from contract.store import Location, is_remote
from scoring.bundle import read_manifest, verify_files
from scoring.bundle_fetch import local_bundle

from .bundle import PublishPolicy, build_bundle
from .data_checks import check_data, check_minimums
from .config import RunConfig, child_seed
from .data.dataset import Dataset
from .data.loading import DataSource, load_dataset, reading
from .models import registry
from .fingerprint import code_fingerprint, run_fingerprint
from .training.workers import trained_as_completed

log = logging.getLogger(__name__)


def latest_bundle(artifacts: Location) -> tuple[Location, Path] | None:
    """Where the artifacts root's ``latest`` bundle is published, and a local folder holding it
    (a store's bundle is fetched into the cache and verified); None when there is none."""
    if is_remote(artifacts):
        latest = StoreRoot(str(artifacts)).latest()
        return (latest, local_bundle(latest)) if latest is not None else None
    latest = resolve_latest(Path(artifacts)) if Path(artifacts).is_dir() else None
    return (latest, latest) if latest is not None else None


def reusable_bundle(artifacts: Location, fingerprint: str) -> Location | None:
    """The latest bundle if it was built from the same fingerprint and its files are intact."""
    try:
        found = latest_bundle(artifacts)
        if found is None:
            return None
        manifest = read_manifest(found[1])
        verify_files(found[1], manifest, list(manifest["files"]))
    except BundleError as exc:
        log.warning("existing bundle is not reusable: %s", exc)
        return None
    return found[0] if manifest.get("fingerprint") == fingerprint else None


def models_for_data(config: RunConfig, dataset: Dataset, models_given: bool) -> RunConfig:
    """The models that can train on ``dataset``: those that need an order of each user's ratings
    the data lacks, or that accept fewer items than its catalogue, are left out with a warning,
    or refused (exit 2) when ``--models`` asked for them."""
    reasons = {}
    unordered = [m for m in config.models if registry.get(m).needs_order] if not dataset.ordered else []
    if unordered:
        reasons[tuple(unordered)] = (
            f"the ratings have no timestamp, and {', '.join(unordered)} reads each user's ratings in time order: "
            "map a time column with --columns timestamp=NAME or order by any column with --order-by NAME")
    n_items = dataset.vocab.n_items
    for name in config.models:
        limit = registry.get(name).catalogue_limit(config.model_config(name))
        if limit is not None and n_items > limit:
            reasons[(name,)] = (f"the catalogue has {n_items:,} items, and {name} accepts at most {limit:,} "
                                f"(its cost grows with the catalogue squared)")
    if not reasons:
        return config
    left_out = [m for names in reasons for m in names]
    advice = "; ".join(reasons.values())
    if models_given:
        raise UsageError(f"--models: {advice}; leave {', '.join(left_out)} out")
    kept = tuple(m for m in config.models if m not in left_out)
    if not kept:
        raise UsageError(f"--models: {advice}")
    log.warning("%s; training %s only", advice, ", ".join(kept))
    return dataclasses.replace(config, models=kept)


def current_bundle(artifacts: Location) -> tuple[Path | None, dict | None]:
    """A local folder holding the bundle ``latest`` names, and its manifest; (None, None) when there
    is none or it cannot be read (then there is nothing to compare with, as on a first run)."""
    try:
        found = latest_bundle(artifacts)
        if found is None:
            return None, None
        return found[1], read_manifest(found[1])
    except BundleError as exc:
        log.warning("the current bundle cannot be read (%s); nothing to compare the data with", exc)
        return None, None


def check_held_out(dataset: Dataset, previous: Path | None, accept_worse: bool) -> None:
    """Refuse, before training, data that leaves no held-out rating to test the models on: an
    error (exit 1) on a first run; with a bundle to keep, a refusal (exit 3) unless ``accept_worse``."""
    if len(dataset.test):
        return
    dropped = int(dataset.notes.get("cold_start_test_dropped", 0))
    why = (f"none of its {dropped:,} ratings has a user and item in the training data" if dropped
           else "no held-out rating has a user and item in the training data")
    if previous is None:
        raise DataError(f"{dataset.test_described}: {why}, so the models cannot be tested; nothing was published")
    if not accept_worse:
        raise GateRefused(f"{dataset.test_described}: {why}, so there is no evidence that new models are not worse "
                          f"than the current bundle {previous.name}'s; nothing was trained or published (pass "
                          "--accept-worse to publish untested models anyway)")
    log.warning("%s: %s; training untested models (--accept-worse)", dataset.test_described, why)


def train_and_export(config: RunConfig, source: DataSource, artifacts: Location, jobs: int | None, force: bool = False,
                     models_given: bool = True, policy: PublishPolicy = PublishPolicy()) -> Location:
    """Load and check the data, train each model, export, gate and publish; reuse an up-to-date
    bundle. The data is checked against the current bundle's before anything trains."""
    dataset, checksums = load_dataset(source, config, np.random.default_rng(child_seed(config.seed, "split")))
    previous, previous_manifest = current_bundle(artifacts)
    record = check_data(dataset, dataset.described, previous, previous_manifest, policy.data)
    check_minimums(dataset, dataset.described)
    check_held_out(dataset, previous, policy.gate.accept_worse)
    policy = dataclasses.replace(policy, data_record=record)
    config = models_for_data(config, dataset, models_given)
    fingerprint = run_fingerprint(config, {**checksums, **reading(source)}, code_fingerprint(models=config.models))
    if not force and (existing := reusable_bundle(artifacts, fingerprint)) is not None:
        log.info("bundle %s is up to date (same data, settings and code); not retraining",
                 str(existing).rsplit("/", 1)[-1])
        return existing
    with closing(trained_as_completed(dataset, config, jobs)) as trained:
        return build_bundle(dataset, trained, config, fingerprint, checksums, artifacts, policy)
