"""Retention: ``--keep N`` removes all but the newest N published directories under a root.

Called under the root's lock, after a successful publish. It never removes what ``latest`` or
``_LATEST`` names, nor a directory the caller protects (a bundle that a kept run was scored from,
or that a run in progress is reading). Each directory is first renamed to a staging name, which
is atomic, then deleted: a run killed while pruning leaves a staging directory, never half a
published one, and the next run on the root removes it (``publish.remove_stale_staging``).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from .failpoints import failpoint
from .publish import LATEST, NAME_HASH_CHARS, POINTER_FILE, STAGING_PREFIX, SUCCESS_MARKER

log = logging.getLogger(__name__)

DEFAULT_KEEP = 7
"""Runs (and bundles) kept by default: a week of nightly runs."""
PUBLISHED_NAME = re.compile(r"^\d{8}T\d{6,12}Z-[0-9a-f]{%d}$" % NAME_HASH_CHARS)
"""Names the job publishes under a root (``<UTC time>-<hash prefix>``); they sort by time."""
PRUNED_PREFIX = STAGING_PREFIX + "pruned-"


def published(root: Path) -> list[Path]:
    """The complete published directories under ``root``, oldest first."""
    return sorted(p for p in root.iterdir()
                  if PUBLISHED_NAME.match(p.name) and p.is_dir() and not p.is_symlink()
                  and (p / SUCCESS_MARKER).is_file())


def current(root: Path) -> set[str]:
    """The names ``latest`` and ``_LATEST`` point at."""
    names = set()
    link = root / LATEST
    if link.is_symlink():
        names.add(Path(os.readlink(link)).name)
    pointer = root / POINTER_FILE
    if pointer.is_file():
        names.add(pointer.read_text().strip())
    return names


def prune(root: Path, keep: int, protected: set[str] = frozenset()) -> list[str]:
    """Remove all but the newest ``keep`` published directories (0: keep all), sparing the current
    ones and ``protected`` names; returns the names removed."""
    if keep <= 0:
        return []
    spared = current(root) | set(protected)
    candidates = published(root)
    removed = []
    for path in candidates[:-keep]:
        if path.name in spared:
            continue
        doomed = root / f"{PRUNED_PREFIX}{path.name}"
        os.rename(path, doomed)
        failpoint("mid_prune")
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(path.name)
    if removed:
        log.info("retention: removed %d of %d under %s, keeping the newest %d", len(removed), len(candidates),
                 root, keep)
    return removed
