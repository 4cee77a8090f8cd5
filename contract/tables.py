"""Parquet schemas of the published tables, defined once and imported wherever tables are built."""
from __future__ import annotations

import pyarrow as pa

TABLE_NAMES: tuple[str, ...] = ("predictions", "recommendations")
"""Tables a scoring run can write; each is Hive-partitioned by ``model=<name>``."""

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

PARQUET_COMPRESSION = "zstd"
"""Codec of every published Parquet file."""

PARQUET_COMPRESSION_LEVEL = 1
"""zstd level 1: as small as the library default 3 for these columns and faster to write
(docs/performance.md)."""

PARQUET_USE_DICTIONARY = False
"""Plain encoding + zstd: smaller and faster to write than dictionary encoding for these
columns, which are mostly distinct floats and sorted ids (docs/performance.md)."""
