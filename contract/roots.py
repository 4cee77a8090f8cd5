"""Where runs and bundles are published: a local folder, or a folder on an object store.

Both kinds of root give a writer the same steps, so the scoring job and the trainer do not
care which they publish to: take the root's lock, clean what dead runs left, name the new
directory, write it in a local staging folder, publish it (which moves ``latest`` last), prune.

* ``LocalRoot``: the staging folder is inside the root; publishing renames it and switches the
  ``latest`` link and the ``_LATEST`` file (``contract.publish``); the lock is a ``flock``.
* ``StoreRoot``: an object store has no rename and no link. The staging folder is local; publishing
  uploads it under ``<root>/<name>/`` (no object of a run is ever overwritten), then its
  ``manifest.json``, then ``_SUCCESS``, and only then replaces ``_LATEST`` with a write
  conditional on the ETag read when the run started (create-only on a first publish): a
  publisher that finds the pointer moved publishes nothing. The lock is a lease
  (``contract.store_lock``). A folder without ``_SUCCESS`` is what a dead run left, and the next
  run removes it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, ContextManager, Protocol

from . import publish as local
from . import retention
from .errors import PublishError, UsageError
from .failpoints import failpoint
from .publish import NAME_CLOCKS, NAME_HASH_CHARS, POINTER_FILE, SUCCESS_MARKER
from .store import CONDITIONAL_SCHEMES, Location, Store, is_remote
from .store_lock import LOCK_OBJECT, StoreLock

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STAGING_ENVIRONMENT = "RECJOB_STAGING_DIR"
"""Local folder under which runs bound for an object store are staged (default: the system's temporary folder)."""


class PublishRoot(Protocol):
    """The steps of publishing under one root; see the module's docstring."""

    location: Location

    def lock(self, wait: bool, advice: str, note: dict[str, str] | None = None) -> ContextManager[Any]: ...

    def clean(self) -> None: ...

    def new_name(self, now: datetime, digest: str, clock: str) -> tuple[str, datetime]: ...

    def latest(self) -> Location | None: ...

    def staging(self, name: str) -> Path: ...

    def early_sender(self, staging: Path, name: str) -> Callable[[Path], None] | None: ...

    def publish(self, staging: Path, name: str, switch: bool = True) -> Location: ...

    def discard(self, staging: Path) -> None: ...

    def prune(self, keep: int, protected: set[str] = frozenset()) -> list[str]: ...

    def manifests(self) -> list[dict[str, Any]]: ...


def open_root(location: Location) -> PublishRoot:
    """The root at ``location``, created (local) or checked reachable (store)."""
    return StoreRoot(location) if is_remote(location) else LocalRoot(Path(location))


def next_name(exists: Any, now: datetime, digest: str, clock: str) -> tuple[str, datetime]:
    """``<UTC time>-<hash prefix>`` for which ``exists`` is false, and the time it names: the time
    moves on a tick past any name in use, so two runs of the same inputs get two names."""
    time_format, tick = NAME_CLOCKS[clock]
    while True:
        name = f"{now:{time_format}}-{digest[:NAME_HASH_CHARS]}"
        if not exists(name):
            return name, now
        now += tick


class LocalRoot:
    """A folder on this machine's filesystem (or one it mounts)."""

    def __init__(self, path: Path) -> None:
        self.location: Path = local.prepare_root(path)

    def lock(self, wait: bool, advice: str, note: dict[str, str] | None = None) -> ContextManager[Any]:
        return local.RootLock(self.location, wait=wait, advice=advice)

    def clean(self) -> None:
        local.remove_stale_staging(self.location)

    def new_name(self, now: datetime, digest: str, clock: str) -> tuple[str, datetime]:
        return local.new_name(self.location, now, digest, clock)

    def latest(self) -> Path | None:
        return local.resolve_latest(self.location)

    def staging(self, name: str) -> Path:
        return local.new_staging_dir(self.location, name)

    def early_sender(self, staging: Path, name: str) -> None:
        """Nothing to send: the staging folder is renamed into place."""
        return None

    def publish(self, staging: Path, name: str, switch: bool = True) -> Path:
        return local.publish(staging, self.location, name, switch)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def prune(self, keep: int, protected: set[str] = frozenset()) -> list[str]:
        return retention.prune(self.location, keep, protected)

    def manifests(self) -> list[dict[str, Any]]:
        """The manifests of the complete published directories, oldest first (unreadable ones skipped)."""
        found = []
        for path in retention.published(self.location):
            with contextlib.suppress(OSError, ValueError):
                found.append(json.loads((path / MANIFEST).read_text()))
        return found


class StoreRoot:
    """A folder on an object store (``s3://bucket/prefix``)."""

    def __init__(self, uri: str) -> None:
        scheme = uri.split("://", 1)[0]
        if scheme not in CONDITIONAL_SCHEMES:
            raise UsageError(f"{uri}: publishing to {scheme}:// needs conditional writes, which this job sends to "
                             f"{', '.join(s + '://' for s in CONDITIONAL_SCHEMES)} only; publish to a local path or "
                             "an s3:// URI (reading inputs and bundles from it works)")
        self.store = Store.open(uri)
        self.store.check_access()
        self.location: str = self.store.uri
        self._lock: StoreLock | None = None
        self._sender: ThreadPoolExecutor | None = None
        self._sent: list[Future[None]] = []
        self._pointer: tuple[str | None, str | None] | None = None
        digest = hashlib.sha256(self.location.encode()).hexdigest()[:16]
        base = Path(os.environ.get(STAGING_ENVIRONMENT) or tempfile.gettempdir())
        self._staging_root = base / "recjob-staging" / digest
        """Where this root's runs are staged on this machine: one folder per root, so the next run on
        the root removes what a killed one left here too."""

    def lock(self, wait: bool, advice: str, note: dict[str, str] | None = None) -> ContextManager[Any]:
        self._lock = StoreLock(self.store, wait=wait, advice=advice, note=note)
        return self._lock

    def clean(self) -> None:
        """Folders without ``_SUCCESS`` (a run died before finishing, or while being pruned) and this
        machine's staging folders of the root: removed. Call while holding the lease."""
        removed = [name for name in self._named_folders() if not self.store.exists(f"{name}/{SUCCESS_MARKER}")]
        for name in removed:
            self.store.delete_folder(name)
        if removed:
            log.info("removed %d unfinished run%s left on %s by a run that died: %s", len(removed),
                     "" if len(removed) == 1 else "s", self.location, ", ".join(removed))
        if self._staging_root.is_dir():
            shutil.rmtree(self._staging_root, ignore_errors=True)

    def _named_folders(self) -> list[str]:
        return [n for n in self.store.folders() if retention.PUBLISHED_NAME.match(n)]

    def new_name(self, now: datetime, digest: str, clock: str) -> tuple[str, datetime]:
        taken = set(self.store.folders())
        return next_name(lambda name: name in taken, now, digest, clock)

    def _read_pointer(self) -> tuple[str | None, str | None]:
        if self._pointer is None:
            body, etag, _ = self.store.read_tagged(POINTER_FILE)
            name = body.decode().strip() if body is not None else None
            self._pointer = (name or None, etag)
        return self._pointer

    def latest(self) -> str | None:
        """The URI ``_LATEST`` names; its ETag is kept for the conditional switch at publication."""
        name, _ = self._read_pointer()
        return self.store.uri_of(name) if name else None

    def staging(self, name: str) -> Path:
        path = self._staging_root / name
        path.mkdir(parents=True)
        return path

    def early_sender(self, staging: Path, name: str) -> Callable[[Path], None]:
        """A function the engine calls with each finished folder of ``staging``; the folder's files
        are sent to ``<root>/<name>/`` in the background while the next is written. Nothing is
        visible to readers until ``publish``; a run that is discarded has its folder removed."""
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-upload")
        self._sent = []

        def send(folder: Path) -> None:
            names = sorted(p.relative_to(staging).as_posix() for p in folder.rglob("*") if p.is_file())
            self._sent.append(self._sender.submit(self.store.upload, staging, names, name))

        return send

    def _sent_files(self) -> None:
        """Wait for the early uploads; the first one that failed raises here."""
        if self._sender is None:
            return
        try:
            for future in self._sent:
                future.result()
        finally:
            self._sender.shutdown(wait=True)
            self._sender = None

    def publish(self, staging: Path, name: str, switch: bool = True) -> str:
        """Upload ``staging`` as ``<root>/<name>/``: files, manifest, ``_SUCCESS``; then ``_LATEST``."""
        self._sent_files()
        folder = self.store.child(name)
        there = set(folder.files())   # sent early, or by Spark's tasks themselves
        if MANIFEST in there or SUCCESS_MARKER in there:
            raise PublishError(f"{folder.uri}: a run of that name is already published")
        _, pointer_etag = self._read_pointer()
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        data = [f for f in files if f not in (MANIFEST, SUCCESS_MARKER) and f not in there]
        self.store.upload(staging, data, name)
        failpoint("after_store_files")
        if MANIFEST in files:
            self.store.upload(staging, [MANIFEST], name)
        failpoint("after_store_manifest")
        self.store.write_bytes(f"{name}/{SUCCESS_MARKER}", b"")
        failpoint("after_success_marker")
        if switch:
            if self._lock is not None:
                self._lock.confirm()
            if self.store.put_conditional(POINTER_FILE, f"{name}\n".encode(), pointer_etag) is None:
                self.store.delete_folder(name)
                now = self.store.read_bytes(POINTER_FILE)
                raise PublishError(
                    f"{self.store.uri_of(POINTER_FILE)}: another publisher moved the pointer since this run started "
                    f"(it names {now.decode().strip() if now else 'nothing'} now); this run was not published and "
                    "its files were removed")
            self._pointer = (name, None)
            failpoint("after_latest_switch")
        shutil.rmtree(staging, ignore_errors=True)
        return folder.uri

    def discard(self, staging: Path) -> None:
        """Remove a run that will not be published: here, and what was sent of it to the store."""
        with contextlib.suppress(Exception):
            self._sent_files()
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(Exception):   # best effort: the next run removes a folder without _SUCCESS
            name = staging.name
            if not self.store.exists(f"{name}/{SUCCESS_MARKER}"):
                self.store.delete_folder(name)

    def published(self) -> list[str]:
        """Names of the complete folders under the root, oldest first."""
        return [n for n in self._named_folders() if self.store.exists(f"{n}/{SUCCESS_MARKER}")]

    def prune(self, keep: int, protected: set[str] = frozenset()) -> list[str]:
        """Delete all but the newest ``keep`` complete folders, sparing what ``_LATEST`` names and
        ``protected``; each loses its ``_SUCCESS`` first, so one cut short is cleaned next time."""
        if keep <= 0:
            return []
        self._pointer = None
        spared = {self._read_pointer()[0]} | set(protected)
        complete = self.published()
        removed = []
        for name in complete[:-keep]:
            if name in spared:
                continue
            self.store.delete_folder(name)
            failpoint("mid_prune")
            removed.append(name)
        if removed:
            log.info("retention: removed %d of %d under %s, keeping the newest %d", len(removed), len(complete),
                     self.location, keep)
        return removed

    def manifests(self) -> list[dict[str, Any]]:
        found = []
        for name in self.published():
            with contextlib.suppress(ValueError):
                body = self.store.read_bytes(f"{name}/{MANIFEST}")
                if body is not None:
                    found.append(json.loads(body))
        return found

    def lease_note(self) -> dict[str, Any]:
        """What the current holder of the root's lease wrote beside its name (empty when none holds it)."""
        body, _, _ = self.store.read_tagged(LOCK_OBJECT)
        if body is None:
            return {}
        with contextlib.suppress(ValueError):
            value = json.loads(body)
            return value.get("note") or {} if isinstance(value, dict) else {}
        return {}
