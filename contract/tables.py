"""Parquet schemas of the published tables, defined once and imported wherever tables are built."""
from __future__ import annotations

import pyarrow as pa

from .ids import fits_int32

RUN_SCHEMA_VERSION = 3
"""Version of a scoring run's layout: its manifest's fields and its tables' meaning. Bumped
whenever either changes; every table file's footer carries it."""

TABLE_NAMES: tuple[str, ...] = ("predictions", "recommendations")
"""Tables a scoring run can write; each is Hive-partitioned by ``model=<name>``."""

ID_TYPES: tuple[pa.DataType, ...] = (pa.int32(), pa.int64(), pa.string())
"""Types an id column may have: int32 where every id fits, else int64, or text."""

PREDICTIONS = pa.schema(
    [
        pa.field("user_id", pa.int32(), nullable=False),
        pa.field("item_id", pa.int32(), nullable=False),
        pa.field("prediction", pa.float32(), nullable=False),
    ],
    metadata={"description": "Predicted rating on the data's rating scale, clipped to it, for every user-item pair."},
)

RECOMMENDATIONS = pa.schema(
    [
        pa.field("user_id", pa.int32(), nullable=False),
        pa.field("rank", pa.int16(), nullable=False),
        pa.field("item_id", pa.int32(), nullable=False),
        pa.field("prediction", pa.float32(), nullable=False),
        pa.field("logit", pa.float32(), nullable=False),
    ],
    metadata={"description": "Top-N unseen items per user, rank 1 = best: ordered by 'logit', the model's "
                             "ranking logit (does the user rate this item at all), ties by smaller item_id; "
                             "'prediction' is the predicted rating."},
)

SCHEMAS: dict[str, pa.Schema] = {"predictions": PREDICTIONS, "recommendations": RECOMMENDATIONS}
"""The tables' schemas for int32 ids (MovieLens); ``table_schema`` gives them for other id types."""


def table_schema(table: str, user_type: pa.DataType = pa.int32(), item_type: pa.DataType = pa.int32()) -> pa.Schema:
    """A table's schema with the id columns typed as the data's ids are."""
    schema = SCHEMAS[table]
    for name, kind in (("user_id", user_type), ("item_id", item_type)):
        index = schema.get_field_index(name)
        schema = schema.set(index, schema.field(index).with_type(kind))
    return schema


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
