"""The export pipeline from configured options to a published bundle: data, training, export,
reusing an up-to-date bundle instead of retraining."""
from __future__ import annotations

import logging
from contextlib import closing
from pathlib import Path

import numpy as np

from contract.errors import BundleError
from contract.publish import resolve_latest
from scoring.bundle import read_manifest, verify_files

from .bundle import build_bundle
from .config import RunConfig, child_seed
from .data.loading import DataSource, load_dataset
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


def train_and_export(config: RunConfig, source: DataSource, artifacts: Path, jobs: int, force: bool = False) -> Path:
    """Load the data, train each model, export and publish; reuse an up-to-date bundle."""
    dataset, checksums = load_dataset(source, config, np.random.default_rng(child_seed(config.seed, "split")))
    fingerprint = run_fingerprint(config, checksums, code_fingerprint(models=config.models))
    if not force and (existing := reusable_bundle(artifacts, fingerprint)) is not None:
        log.info("bundle %s is up to date (same data, settings and code); not retraining", existing.name)
        return existing
    with closing(trained_as_completed(dataset, config, jobs)) as trained:
        return build_bundle(dataset, trained, config, fingerprint, checksums, artifacts)
