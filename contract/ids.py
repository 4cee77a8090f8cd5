"""Raw ids to embedding rows: the one lookup of raw ids in a sorted vocabulary."""
from __future__ import annotations

import numpy as np

from .errors import RecJobError


def positions(known: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (int64) of ``raw`` ids in the ascending array ``known``, and whether each is
    there (its position is 0 where it is not). Text and integer ids do not match each other."""
    raw = np.asarray(raw)
    if len(known) == 0 or (known.dtype.kind == "U") != (raw.dtype.kind == "U"):
        return np.zeros(raw.shape, np.int64), np.zeros(raw.shape, bool)
    index = np.minimum(np.searchsorted(known, raw), len(known) - 1)
    found = known[index] == raw
    return np.where(found, index, 0).astype(np.int64), found


def index_of(known: np.ndarray, raw: np.ndarray, error: type[RecJobError], what: str) -> np.ndarray:
    """Positions (int64) of ``raw`` ids in the ascending array ``known``; ``error`` naming the
    first few ids ``known`` lacks (``what`` says where they came from)."""
    raw = np.asarray(raw)
    if known.dtype.kind == "U" and raw.dtype.kind != "U":
        raw = raw.astype(str)
    elif known.dtype.kind in "iu" and raw.dtype.kind not in "iu":
        raise error(f"{what}: expected integer ids, got {raw[:3].tolist()}")
    if len(known) == 0:
        if raw.size:
            raise error(f"{what}: ids {raw[:5].tolist()} not in the vocabulary (it is empty)")
        return np.zeros(raw.shape, np.int64)
    index = np.minimum(np.searchsorted(known, raw), len(known) - 1)
    unknown = known[index] != raw
    if unknown.any():
        raise error(f"{what}: ids {raw[unknown][:5].tolist()} not in the vocabulary")
    return index.astype(np.int64)


def fits_int32(values: np.ndarray) -> bool:
    """Whether every integer id fits in int32 (the tables then hold int32, half the bytes of int64)."""
    return len(values) == 0 or (values.min() >= np.iinfo(np.int32).min and values.max() <= np.iinfo(np.int32).max)
