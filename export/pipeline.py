"""The export pipeline from configured options to a published bundle: data, training, export,
reusing an up-to-date bundle instead of retraining."""
from __future__ import annotations

import dataclasses
import logging
from contextlib import closing
from pathlib import Path

import numpy as np

from contract.errors import BundleError, UsageError
from contract.publish import resolve_latest
from scoring.bundle import read_manifest, verify_files

from .bundle import PublishPolicy, build_bundle
from .config import RunConfig, child_seed
from .data.dataset import Dataset
from .data.loading import DataSource, load_dataset
from .models import registry
from .fingerprint import code_fingerprint, run_fingerprint
from .training.workers import trained_as_completed

log = logging.getLogger(__name__)


def reusable_bundle(artifacts: Path, fingerprint: str) -> Path | None:
    """The latest bundle if it was built from the same fingerprint and its files are intact."""
    latest = resolve_latest(artifacts)
    if latest is None:
        return None
    try:
        manifest = read_manifest(latest)
        verify_files(latest, manifest, list(manifest["files"]))
    except BundleError as exc:
        log.warning("existing bundle is not reusable: %s", exc)
        return None
    return latest if manifest.get("fingerprint") == fingerprint else None


def models_for_data(config: RunConfig, dataset: Dataset, models_given: bool) -> RunConfig:
    """The models that can train on ``dataset``: without an order of each user's ratings, those
    that need one are left out with a warning, or refused when ``--models`` asked for them."""
    unordered = [m for m in config.models if registry.get(m).needs_order] if not dataset.ordered else []
    if not unordered:
        return config
    advice = (f"the ratings have no timestamp, and {', '.join(unordered)} reads each user's ratings in time "
              "order: map a time column with --columns timestamp=NAME or order by any column with --order-by NAME")
    if models_given:
        raise UsageError(f"--models: {advice}, or leave {', '.join(unordered)} out")
    kept = tuple(m for m in config.models if m not in unordered)
    if not kept:
        raise UsageError(f"--models: {advice}")
    log.warning("%s; training %s only", advice, ", ".join(kept))
    return dataclasses.replace(config, models=kept)


def train_and_export(config: RunConfig, source: DataSource, artifacts: Path, jobs: int | None, force: bool = False,
                     models_given: bool = True, policy: PublishPolicy = PublishPolicy()) -> Path:
    """Load the data, train each model, export, gate and publish; reuse an up-to-date bundle."""
    dataset, checksums = load_dataset(source, config, np.random.default_rng(child_seed(config.seed, "split")))
    config = models_for_data(config, dataset, models_given)
    fingerprint = run_fingerprint(config, checksums, code_fingerprint(models=config.models))
    if not force and (existing := reusable_bundle(artifacts, fingerprint)) is not None:
        log.info("bundle %s is up to date (same data, settings and code); not retraining", existing.name)
        return existing
    with closing(trained_as_completed(dataset, config, jobs)) as trained:
        return build_bundle(dataset, trained, config, fingerprint, checksums, artifacts, policy)
