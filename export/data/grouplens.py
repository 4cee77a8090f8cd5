"""MovieLens releases by name from GroupLens, each zip checked against the md5 GroupLens publishes
beside it (``<name>.zip.md5``), unpacked into the cache once."""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from contract.checksums import md5_file
from contract.errors import ChecksumError, FetchError

log = logging.getLogger(__name__)

GROUPLENS_BASE = "https://files.grouplens.org/datasets/movielens"
RELEASES: dict[str, str] = {
    "ml-1m": "ratings.dat",
    "ml-10m": "ratings.dat",
    "ml-20m": "ratings.csv",
    "ml-25m": "ratings.csv",
    "ml-latest-small": "ratings.csv",
}
"""Releases fetched by name, with the ratings file each holds (ml-100k has its own fetch, with a
fallback copy: ``fetch.fetch_movielens``)."""
FOLDERS = {"ml-10m": "ml-10M100K"}
"""Folders inside a release's zip that are not named after the release."""
TIMEOUT_S = 30


def _download(url: str, target: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    except (OSError, urllib.error.URLError) as exc:
        raise FetchError(f"{url}: unreachable ({getattr(exc, 'reason', exc)})") from exc


def published_md5(text: str, url: str) -> str:
    """The md5 in a GroupLens checksum file ('MD5 (name.zip) = <hex>' or '<hex>  name.zip')."""
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if match is None:
        raise FetchError(f"{url}: no md5 checksum in it")
    return match.group(0).lower()


def fetch_release(name: str, cache_dir: Path, base_url: str = GROUPLENS_BASE) -> Path:
    """The ratings file of release ``name``, downloaded, checked and unpacked into ``cache_dir``
    unless it is there already. FetchError (one line, with what to do instead) when GroupLens
    cannot be reached; ChecksumError when the zip is not the one published."""
    folder = cache_dir / FOLDERS.get(name, name)
    ratings = folder / RELEASES[name]
    if ratings.is_file():
        log.info("%s: using cached %s", name, ratings)
        return ratings
    url = f"{base_url.rstrip('/')}/{name}.zip"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".fetch-") as tmp:
        archive, checksum = Path(tmp) / f"{name}.zip", Path(tmp) / f"{name}.zip.md5"
        try:
            _download(url + ".md5", checksum)
            _download(url, archive)
        except FetchError as exc:
            raise FetchError(f"{exc}; download {name}.zip from GroupLens elsewhere, unzip it, and pass its "
                             f"{RELEASES[name]} with --ratings PATH") from exc
        expected = published_md5(checksum.read_text(errors="replace"), url + ".md5")
        actual = md5_file(archive)
        if actual != expected:
            raise ChecksumError(f"{url}: md5 {actual}, expected {expected} as published in {url}.md5; the download "
                                "is corrupted or not the file it claims to be; nothing was cached")
        try:
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(Path(tmp) / "unpacked")
        except zipfile.BadZipFile as exc:
            raise FetchError(f"{url}: not a readable zip ({exc})") from exc
        unpacked = Path(tmp) / "unpacked" / folder.name
        if not (unpacked / RELEASES[name]).is_file():
            raise FetchError(f"{url}: the zip holds no {folder.name}/{RELEASES[name]}")
        if folder.exists():
            shutil.rmtree(folder)
        unpacked.rename(folder)
    log.info("%s: cached in %s", name, folder)
    return ratings
