"""Atomic publication of a finished directory: staging, fsync, rename, ``latest`` switch and a lock.

Readers only ever follow ``<root>/latest``; it is switched with one ``rename`` after the new
directory is complete and flushed, so they see the old run or the new one, never a mix.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType

from .errors import LockError, PublishError
from .failpoints import failpoint

log = logging.getLogger(__name__)

LATEST = "latest"
"""Name of the symbolic link that points at the newest complete directory under a root."""

SUCCESS_MARKER = "_SUCCESS"
"""Empty file written last into a complete run, as Hadoop-style readers expect."""

POINTER_FILE = "_LATEST"
"""File under a root holding the name of the newest complete directory, for readers on stores
without symbolic links (HDFS, object stores). Named like ``_SUCCESS``: a file called ``LATEST``
beside the ``latest`` link would replace the link on case-insensitive filesystems."""

STAGING_PREFIX = ".staging-"
BUNDLE_IN_USE = "_BUNDLE"
"""File in a scoring run's staging folder naming the bundle folder it reads, until it publishes."""
LOCK_FILE = ".lock"

NAME_HASH_CHARS = 10
"""Characters of the inputs' hash after the time in a published name."""
NAME_CLOCKS = {"second": ("%Y%m%dT%H%M%SZ", timedelta(seconds=1)),
               "microsecond": ("%Y%m%dT%H%M%S%fZ", timedelta(microseconds=1))}
"""Time formats of published names (bundles to the second, scoring runs to the microsecond) and one tick of each."""


def new_name(root: Path, now: datetime, digest: str, clock: str) -> tuple[str, datetime]:
    """``<UTC time>-<hash prefix>`` for a new directory under ``root``, and the time it names.

    Call under the root's lock. Two runs of the same inputs within one tick of the clock would
    get one name and the second could not publish, so the time moves on a tick past any name in use.
    """
    time_format, tick = NAME_CLOCKS[clock]
    while True:
        name = f"{now:{time_format}}-{digest[:NAME_HASH_CHARS]}"
        if not os.path.lexists(root / name):
            return name, now
        now += tick


def prepare_root(root: Path) -> Path:
    """Create ``root`` if needed and check it is a writable directory; return it resolved."""
    if root.exists() and not root.is_dir():
        raise PublishError(f"{root}: output root exists but is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(f"{root}: cannot create output root ({exc.strerror})") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise PublishError(f"{root}: output root is not writable")
    return root.resolve()


class RootLock:
    """Exclusive ``flock`` on ``<root>/.lock``; the kernel drops it if the holder dies."""

    def __init__(self, root: Path, wait: bool = False,
                 advice: str = "wait for it to finish or pass --wait") -> None:
        self.path = root / LOCK_FILE
        self.wait = wait
        self.advice = advice
        """What the error tells the user to do when the lock is held and ``wait`` is false."""
        self._fd: int | None = None

    def __enter__(self) -> "RootLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PublishError(f"{self.path}: cannot open lock file ({exc.strerror})") from exc
        flags = fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockError(
                f"{self.path}: another run (pid {holder}) is writing to this output root; {self.advice}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def remove_stale_staging(root: Path) -> list[Path]:
    """Delete staging directories left by killed runs; call only while holding the root's lock."""
    removed = []
    for path in sorted(root.glob(STAGING_PREFIX + "*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        log.info("removed %d unfinished staging director%s left by an earlier run",
                 len(removed), "y" if len(removed) == 1 else "ies")
    return removed


def new_staging_dir(root: Path, name: str) -> Path:
    """Create and return an empty staging directory for ``name`` under ``root``."""
    path = root / f"{STAGING_PREFIX}{name}-{os.getpid()}"
    try:
        path.mkdir()
    except OSError as exc:
        raise PublishError(f"{path}: cannot create staging directory ({exc.strerror})") from exc
    return path


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Flush every file and directory under ``path`` to disk, children before parents."""
    for dirpath, _dirnames, filenames in os.walk(path, topdown=False):
        for filename in filenames:
            _fsync_path(Path(dirpath) / filename)
        _fsync_path(Path(dirpath))


def publish(staging: Path, root: Path, name: str, switch: bool = True) -> Path:
    """Move a complete ``staging`` directory to ``root/name`` and point ``root/latest`` at it.

    ``staging`` must already hold its manifest; this writes ``_SUCCESS``, flushes everything,
    renames, and swaps the ``latest`` link with a single atomic rename. With ``switch`` false the
    directory is kept under ``root`` but ``latest`` and ``_LATEST`` stay as they were.
    """
    (staging / SUCCESS_MARKER).touch()
    failpoint("after_success_marker")
    fsync_tree(staging)
    final = root / name
    if final.exists():
        raise PublishError(f"{final}: a run of that name is already published")
    os.rename(staging, final)
    failpoint("after_rename")
    if not switch:
        _fsync_path(root)
        return final
    link_tmp = root / f"{STAGING_PREFIX}{LATEST}-{os.getpid()}"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(name, link_tmp)
    os.replace(link_tmp, root / LATEST)
    _fsync_path(root)
    failpoint("after_latest_switch")
    write_pointer(root, name)
    return final


def write_pointer(root: Path, name: str) -> None:
    """``root/_LATEST`` := ``name``, written to a temporary file, flushed and renamed over the old one."""
    tmp = root / f"{STAGING_PREFIX}{POINTER_FILE}-{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, root / POINTER_FILE)
    _fsync_path(root)


def resolve_latest(root: Path) -> Path | None:
    """The directory ``root/latest`` points at, or None when nothing is published yet."""
    link = root / LATEST
    if not link.exists():
        return None
    return link.resolve()
