"""File checksums used to pin downloads, bundles and published tables."""
from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, hex-encoded."""
    return file_digest(path, "sha256")


def md5_file(path: Path) -> str:
    """MD5 of a file, hex-encoded (the checksum GroupLens publishes for MovieLens)."""
    return file_digest(path, "md5")
