"""Bundles on an object store: downloaded once into a local cache keyed by bundle id, every file
checked against the bundle's manifest before the cache entry exists.

``--bundle s3://bucket/artifacts`` names an artifacts root (its ``_LATEST`` bundle);
``--bundle s3://bucket/artifacts/<bundle-id>`` one bundle. A bundle id names one set of files
forever, so a cached bundle is never fetched again; it is still checked whenever it is used,
by ``load_bundle``, like any local bundle.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from contract.errors import BundleError
from contract.publish import POINTER_FILE, STAGING_PREFIX
from contract.store import Location, Store, follow_latest, is_remote

from .bundle import MANIFEST, read_manifest, verify_files

log = logging.getLogger(__name__)

CACHE_ENVIRONMENT = "RECJOB_CACHE_DIR"
"""Folder of the job's local caches (default: ``~/.cache/recjob``)."""


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENVIRONMENT) or Path.home() / ".cache" / "recjob") / "bundles"


def bundle_on_store(uri: str) -> Store:
    """The store folder of the bundle ``uri`` names: itself when it holds a manifest, else the
    bundle its ``_LATEST`` names."""
    folder = follow_latest(uri)
    if folder is None:
        raise BundleError(f"{uri}: neither a bundle (no {MANIFEST}) nor an artifacts root with a published bundle "
                          f"(no {POINTER_FILE}); run `python -m export --artifacts {uri}` first")
    return folder


def bundle_uri(location: str, bundle_dir: Path) -> str:
    """The URI of the one bundle that ``location`` (a bundle or an artifacts root) resolved to."""
    location = location.rstrip("/")
    return location if location.endswith(f"/{bundle_dir.name}") else f"{location}/{bundle_dir.name}"


def local_bundle(location: Location) -> Path:
    """A local folder holding the bundle at ``location``: the folder itself when local, else the
    verified cache entry of the store's bundle."""
    if not is_remote(location):
        return Path(location)
    folder = bundle_on_store(str(location))
    cached = cache_root() / folder.name
    if cached.is_dir():
        return cached
    started = time.perf_counter()
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.parent / f"{STAGING_PREFIX}{folder.name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        names = folder.download(partial)
        if MANIFEST not in names:
            raise BundleError(f"{folder.uri}: bundle manifest is missing")
        manifest = read_manifest(partial)
        try:
            verify_files(partial, manifest, list(manifest["files"]))
        except BundleError as exc:
            raise BundleError(f"{str(exc).replace(str(partial), folder.uri)}; the bundle on the store is "
                              "refused") from None
        try:
            os.rename(partial, cached)
        except OSError:
            if not cached.is_dir():   # a concurrent fetch of the same bundle won the rename; its copy is as good
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("bundle %s fetched from %s and verified (%.2f s)", folder.name, folder.uri, time.perf_counter() - started)
    return cached
