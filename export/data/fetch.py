"""Obtain MovieLens 100K: GroupLens' zip if reachable, else the copy inside the recbole wheel.

Every source is pinned by checksum, the result is cached, and a cached copy whose checksum
matches is used without any network access.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from contract.checksums import md5_file, sha256_file
from contract.errors import ChecksumError, FetchError
from contract.paths import DEFAULT_DATA_DIR

log = logging.getLogger(__name__)

DATASET_DIR = "ml-100k"
U_DATA_MD5 = "6e47046882bad158b0efbb84cd5cb987"
"""MD5 of MovieLens 100K's ``u.data`` (100,000 ratings)."""

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_ZIP_MD5 = "0e33842e24a9c977be4e0107933c0723"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"
NETWORK_TIMEOUT_S = 20

Source = Callable[[Path], None]
"""Writes ``u.data`` (and ``u.item`` where it has one) into the directory it is given."""


def require_checksum(path: Path, expected: str, algorithm: str, what: str) -> None:
    """Raise ChecksumError unless ``path`` has the expected digest."""
    actual = md5_file(path) if algorithm == "md5" else sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"{path}: {what} has {algorithm} {actual}, expected {expected}; "
                            "the download is corrupted or not the file it claims to be")


def from_grouplens(target: Path) -> None:
    """Download GroupLens' official zip, check its md5 and unpack ``u.data`` and ``u.item``."""
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp) / "ml-100k.zip"
        try:
            with urllib.request.urlopen(GROUPLENS_URL, timeout=NETWORK_TIMEOUT_S) as response, \
                    open(zip_path, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise FetchError(f"{GROUPLENS_URL}: unreachable ({exc})") from exc
        require_checksum(zip_path, GROUPLENS_ZIP_MD5, "md5", "ml-100k.zip")
        with zipfile.ZipFile(zip_path) as archive:
            for name in ("u.data", "u.item"):
                (target / name).write_bytes(archive.read(f"ml-100k/{name}"))


def _recbole_items_as_u_item(item_text: str) -> str:
    """Rewrite recbole's ``ml-100k.item`` as ``u.item``'s first two fields: ``id|title (year)``."""
    lines = []
    for line in item_text.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) < 3 or not fields[0]:
            continue
        title = f"{fields[1]} ({fields[2]})" if fields[2] else fields[1]
        lines.append(f"{fields[0]}|{title}")
    return "\n".join(lines) + "\n"


def from_recbole_wheel(target: Path) -> None:
    """Fetch the recbole wheel with ``pip download``, check its sha256 and rebuild ``u.data``."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--quiet", "--dest", tmp, RECBOLE_REQUIREMENT]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if result.returncode != 0 or not wheels:
            raise FetchError(f"pip download {RECBOLE_REQUIREMENT} failed: "
                             f"{result.stderr.strip()[-500:] or 'no wheel was saved'}")
        require_checksum(wheels[0], RECBOLE_WHEEL_SHA256, "sha256", wheels[0].name)
        with zipfile.ZipFile(wheels[0]) as archive:
            inter = archive.read(RECBOLE_MEMBER.format("inter"))
            items = archive.read(RECBOLE_MEMBER.format("item")).decode("utf-8")
    header, _, body = inter.partition(b"\n")
    if not header.startswith(b"user_id"):
        raise FetchError(f"{RECBOLE_REQUIREMENT}: ml-100k.inter has an unexpected header {header[:60]!r}")
    (target / "u.data").write_bytes(body)
    (target / "u.item").write_text(_recbole_items_as_u_item(items), encoding="latin-1", errors="replace")


DEFAULT_SOURCES: tuple[tuple[str, Source], ...] = (
    ("GroupLens", from_grouplens),
    ("recbole wheel", from_recbole_wheel),
)


def cached_copy(cache_dir: Path) -> Path | None:
    """The cached dataset folder if its ``u.data`` has the right md5, else None."""
    folder = cache_dir / DATASET_DIR
    u_data = folder / "u.data"
    if u_data.is_file() and md5_file(u_data) == U_DATA_MD5:
        return folder
    return None


def fetch_movielens(cache_dir: Path = DEFAULT_DATA_DIR,
                    sources: Sequence[tuple[str, Source]] = DEFAULT_SOURCES) -> Path:
    """Return a folder with a verified ``u.data``, downloading it into ``cache_dir`` if needed.

    Each source writes into a fresh temporary folder; only a copy whose ``u.data`` md5 matches
    is moved into the cache, so a corrupted download never lands there.
    """
    cached = cached_copy(cache_dir)
    if cached is not None:
        log.info("MovieLens 100K: using verified cache %s", cached)
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for name, source in sources:
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
        try:
            log.info("MovieLens 100K: fetching from %s", name)
            source(staging)
            require_checksum(staging / "u.data", U_DATA_MD5, "md5", "u.data")
            final = cache_dir / DATASET_DIR
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
            log.info("MovieLens 100K: cached in %s", final)
            return final
        except (FetchError, ChecksumError, OSError, KeyError, zipfile.BadZipFile,
                subprocess.SubprocessError) as exc:
            log.warning("MovieLens 100K: %s failed: %s", name, exc)
            failures.append(f"{name}: {exc}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise FetchError("could not obtain MovieLens 100K from any source:\n  " + "\n  ".join(failures))


def main(argv: list[str] | None = None) -> int:
    """CLI: fetch and cache a MovieLens release, printing where its ratings are."""
    from contract.cli import run_cli

    from .grouplens import GROUPLENS_BASE, RELEASES, fetch_release

    parser = argparse.ArgumentParser(
        prog="python -m export.data.fetch",
        description="Fetch a MovieLens release into the cache, checked against its published checksum, and "
                    "print its ratings file (ml-100k: the folder), ready for python -m export --ratings.")
    parser.add_argument("--dataset", choices=("ml-100k", *RELEASES), default="ml-100k",
                        help="the release (default: %(default)s, which falls back to a copy in the recbole wheel)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="cache folder (default: %(default)s)")
    parser.add_argument("--base-url", default=GROUPLENS_BASE,
                        help="where the releases' zips are served (default: %(default)s)")
    args = parser.parse_args(argv)

    def action() -> None:
        if args.dataset == "ml-100k":
            print(fetch_movielens(args.cache_dir))
        else:
            print(fetch_release(args.dataset, args.cache_dir, args.base_url))

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
