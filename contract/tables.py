"""What every published table shares: the run layout's version, id column types, Parquet settings.

Each table's own schema is in its module (``scoring.tables``)."""
from __future__ import annotations

import pyarrow as pa

from .ids import fits_int32

RUN_SCHEMA_VERSION = 4
"""Version of a scoring run's layout: its manifest's fields and its tables' meaning. Bumped
whenever either changes; every table file's footer carries it."""

ID_TYPES: tuple[pa.DataType, ...] = (pa.int32(), pa.int64(), pa.string())
"""Types an id column may have: int32 where every id fits, else int64, or text."""


def id_type(ids) -> pa.DataType:
    """The id column type of a numpy array of ids: int32 if every id fits, int64, or string."""
    if ids.dtype.kind in "iu":
        return pa.int32() if fits_int32(ids) else pa.int64()
    return pa.string()


PARQUET_COMPRESSION = "zstd"
"""Codec of every published Parquet file."""

PARQUET_COMPRESSION_LEVEL = 1
"""zstd level 1: as small as the library default 3 for these columns and faster to write
(docs/performance.md)."""

PARQUET_USE_DICTIONARY = False
"""Plain encoding + zstd: smaller and faster to write than dictionary encoding for these
columns, which are mostly distinct floats and sorted ids (docs/performance.md)."""
