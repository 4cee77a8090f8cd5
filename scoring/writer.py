"""Parquet output: one file per (table, model) in Hive layout, written in sized row groups."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contract.errors import PublishError
from contract.failpoints import failpoint
from contract.tables import (PARQUET_COMPRESSION, PARQUET_COMPRESSION_LEVEL, PARQUET_USE_DICTIONARY,
                             RUN_SCHEMA_VERSION)

ROW_GROUP_ROWS = 1 << 20
"""Rows buffered before a row group is written: large enough for fast scans, small enough to
keep the writer's memory at a few tens of MB."""

PART_FILE = "part-00000.parquet"
"""The one part a local run writes per table and model; Spark tasks name theirs by user span."""


_ARROW_TYPES = {np.dtype(np.int16): pa.int16(), np.dtype(np.int32): pa.int32(), np.dtype(np.int64): pa.int64(),
                np.dtype(np.float32): pa.float32()}


def arrow_array(values: np.ndarray) -> pa.Array:
    """Zero-copy Arrow view of a 1-d numeric numpy array.

    ``pa.array(ndarray)`` would do too, but its first call imports pandas, which slows every run's start.
    """
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(_ARROW_TYPES[values.dtype], len(values), [None, pa.py_buffer(values)])


def table_file(run_dir: Path, table: str, model: str, part: str = PART_FILE) -> Path:
    """Where a model's partition of a table (or one part of it) lives inside a run directory."""
    return run_dir / table / f"model={model}" / part


class TableWriter(Protocol):
    """Where a pass sends one table's rows: a Parquet file here, record batches for Spark's writer."""

    rows: int

    def write(self, columns: dict[str, pa.Array]) -> None: ...

    def close(self) -> None: ...


def provenance(run_id: str, bundle_id: str, model: str, model_version: str, table: str,
               feedback: str) -> dict[str, str]:
    """Key-value metadata in every table file's footer, so that a reader holding one file knows
    which run, bundle and model wrote it, on which feedback the model was trained (``explicit``
    or ``implicit``), and under which schema version."""
    return {"recjob.run_id": run_id, "recjob.bundle_id": bundle_id, "recjob.model": model,
            "recjob.model_version": model_version, "recjob.table": table, "recjob.feedback": feedback,
            "recjob.run_schema_version": str(RUN_SCHEMA_VERSION)}


class PartitionWriter:
    """Streams record batches of one table and one model into one Parquet file, ``part``, whose
    footer carries ``metadata``."""

    def __init__(self, run_dir: Path, table: str, model: str, schema: pa.Schema,
                 row_group_rows: int = ROW_GROUP_ROWS, part: str = PART_FILE,
                 metadata: dict[str, str] | None = None) -> None:
        self.path = table_file(run_dir, table, model, part)
        self.schema = schema.with_metadata(metadata) if metadata else schema
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, self.schema, compression=PARQUET_COMPRESSION,
                                            compression_level=PARQUET_COMPRESSION_LEVEL,
                                            use_dictionary=PARQUET_USE_DICTIONARY)
        except OSError as exc:
            raise PublishError(f"{self.path}: cannot create Parquet file ({exc})") from exc

    def write(self, columns: dict[str, pa.Array]) -> None:
        """Append rows given as arrays in schema order; flush a row group when enough are buffered."""
        batch = pa.RecordBatch.from_arrays([columns[f.name] for f in self.schema], schema=self.schema)
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        try:
            self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        except OSError as exc:
            raise PublishError(f"{self.path}: write failed ({exc})") from exc
        self.rows += table.num_rows
        self._pending, self._pending_rows = [], 0
        failpoint("mid_model_write")

    def close(self) -> None:
        """Write what is buffered and the file footer."""
        self._flush()
        try:
            self._writer.close()
        except OSError as exc:
            raise PublishError(f"{self.path}: closing the file failed ({exc})") from exc
