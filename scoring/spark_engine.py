"""``--engine spark``: the scoring job's own code in Spark's Python workers.

A DataFrame of user ranges goes through ``mapInArrow``; each Python worker loads the bundle once
(cached per process; only its path travels with the function), runs the same engine, seen-item
masking and top-N as the local engine, checks its users' reference pairs against the bundle's
torch outputs, and yields Arrow batches. Spark's Parquet writer writes each table, partitioned
by ``model``, into the run's staging folder; the runner then checks and publishes as for a local
run. Nothing here needs pandas.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from contract.errors import UsageError
from contract.failpoints import ENVIRONMENT_VARIABLE
from contract.pairs import user_ranges
from contract.parity import check_parity

from .bundle import Bundle, load_bundle
from .chunks import check_finite, prediction_columns, recommendation_columns
from .engine import ModelScorer, PairCollector

TASK_FAILPOINT = "spark_task_first_attempt"
"""``RECJOB_FAILPOINT`` value that kills the Python worker of the first task on its first attempt."""


@dataclass(frozen=True)
class SparkOptions:
    """Where Spark runs and how."""

    master: str | None = None
    """None: what spark-submit or the environment set, else ``local[*]``."""
    conf: tuple[tuple[str, str], ...] = ()
    ship_bundle: bool = False
    """Send the bundle to every executor (as a zip, ``SparkContext.addArchive``, which unpacks it
    there) instead of reading it from a path they all see."""


def parse_conf(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` pairs of ``--spark-conf``; UsageError for one without '='."""
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--spark-conf: expected KEY=VALUE, got {pair!r}")
        parsed.append((key.strip(), value))
    return tuple(parsed)


def session(options: SparkOptions) -> Any:
    """A SparkSession whose Python workers run this interpreter (unless PYSPARK_PYTHON says otherwise)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UsageError("--engine spark: pyspark is not installed (pip install '.[spark]'; it needs Java 17 or 21)") from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("recommender-scoring")
    # Under spark-submit the JVM is started already (it passes its gateway port) with its master set.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    master = options.master or os.environ.get("MASTER") or (None if submitted else "local[*]")
    if master and "spark.master" not in dict(options.conf):
        builder = builder.master(master)
    for key, value in (("spark.ui.enabled", "false"), ("spark.ui.showConsoleProgress", "false"),
                       ("spark.sql.shuffle.partitions", "2")):
        if key not in dict(options.conf):
            builder = builder.config(key, value)
    for key, value in options.conf:
        builder = builder.config(key, value)
    # pyspark warns on every mapInArrow that it does not fully support pandas 3; this path never
    # touches pandas (Arrow batches in and out), so the warning does not apply.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    try:
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        return spark
    except Exception as exc:  # noqa: BLE001 - the JVM's start-up failures come in many types
        raise UsageError(f"--engine spark: Spark did not start ({str(exc).splitlines()[0][:300]}); it needs "
                         "Java 17 or 21 on PATH or in JAVA_HOME") from exc


_WORKER_BUNDLES: dict[tuple[str, str], tuple[Bundle, ModelScorer]] = {}
"""Bundles and scorers opened by this Python worker, by (bundle path, model and graph kind)."""


def _scorer(bundle_path: str, model: str, ranking_only: bool, threads: int) -> tuple[Bundle, ModelScorer]:
    """The bundle and a scorer of ``model``, opened once per Python worker. ``bundle_path`` is
    ``shipped:<name>`` for a bundle sent with ``SparkContext.addArchive`` (unpacked as ``<name>``)."""
    key = (bundle_path, f"{model}:{ranking_only}")
    if key not in _WORKER_BUNDLES:
        if bundle_path.startswith("shipped:"):
            from pyspark import SparkFiles
            bundle_path = SparkFiles.get(bundle_path.removeprefix("shipped:"))
        bundle = load_bundle(Path(bundle_path), [model])
        _WORKER_BUNDLES[key] = (bundle, ModelScorer.open(bundle.graphs(model), bundle.context, threads,
                                                          ranking_only=ranking_only))
    return _WORKER_BUNDLES[key]


def _maybe_die() -> None:
    """The retry test's failpoint: the first task's first attempt kills its own Python worker."""
    if os.environ.get(ENVIRONMENT_VARIABLE) != TASK_FAILPOINT:
        return
    from pyspark import TaskContext
    context = TaskContext.get()
    if context is not None and context.partitionId() == 0 and context.attemptNumber() == 0:
        os.kill(os.getpid(), signal.SIGKILL)


def score_ranges(batches: Iterator[pa.RecordBatch], bundle_path: str, table: str, top_n: int,
                 threads: int, schema: pa.Schema, ranking_only: bool) -> Iterator[pa.RecordBatch]:
    """Rows ``(model, start, stop)`` in, the table's rows for those users out (with ``model``);
    ``ranking_only`` as the local engine decides it, so both engines compute the same values."""
    _maybe_die()
    for batch in batches:
        for model, start, stop in zip(*(batch.column(k).to_pylist() for k in ("model", "start", "stop"))):
            bundle, scorer = _scorer(bundle_path, model, ranking_only, threads)
            users = np.arange(start, stop, dtype=np.int64)
            outputs = scorer.score_users(users)
            for name in ("unit_rating", "logit"):
                values = getattr(outputs, name)
                if values is not None:
                    check_finite(model, bundle, name, values, users[:, None], np.arange(bundle.n_items)[None, :])
            _check_reference(bundle, scorer, users, outputs)
            seconds = {"top_n": 0.0, "onnxruntime_pairs": 0.0}
            columns = prediction_columns(bundle, start, stop, outputs) if table == "predictions" else \
                recommendation_columns(bundle, scorer, start, stop, outputs, top_n, seconds)
            rows = len(next(iter(columns.values())))
            arrays = [pa.array([model] * rows, pa.string()) if f.name == "model" else columns[f.name] for f in schema]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _check_reference(bundle: Bundle, scorer: ModelScorer, users: np.ndarray, outputs: Any) -> None:
    """The scoring run's parity check, for the reference pairs of these users: ParityError fails
    the task, and so the job, before anything is published."""
    ref = bundle.references[scorer.model]
    inside = (ref.users >= users[0]) & (ref.users <= users[-1])
    if not inside.any():
        return
    collector = PairCollector(ref.users[inside], ref.items[inside])
    collector.take(users, outputs)
    unit = collector.values["unit_rating"] if outputs.unit_rating is not None else \
        scorer.rate_pairs(ref.users[inside], ref.items[inside]).unit_rating
    raw = (bundle.user_ids[ref.users[inside]], bundle.item_ids[ref.items[inside]])
    where = f"scoring parity in a Spark task against the bundle's torch reference ({bundle.path})"
    check_parity(scorer.model, ref.unit_ratings[inside], unit, *raw, where)
    check_parity(scorer.model, ref.logits[inside], collector.values["logit"], *raw, where + ", logit output",
                 logits=True)


def write_tables(spark: Any, bundle: Bundle, tables: tuple[str, ...], top_n: int, chunk_pairs: int,
                 staging: Path, ship_bundle: bool = False) -> None:
    """Score every model's users in Spark and write each table under ``staging/<table>/model=<m>/``.
    Each table is its own job; the recommendations' ratings come from the all-items graph when the
    predictions are written too, from the pairwise graph otherwise, as in a local run."""
    ranking_only = "predictions" not in tables
    from pyspark.sql.pandas.types import from_arrow_schema

    threads = int(spark.conf.get("spark.task.cpus", "1"))
    ranges = [(model, start, stop) for model in bundle.models
              for start, stop in user_ranges(bundle.n_users, bundle.n_items, chunk_pairs)]
    slices = max(1, min(len(ranges), spark.sparkContext.defaultParallelism * 4))
    frame = spark.createDataFrame(ranges, "model string, start long, stop long").repartition(slices)
    bundle_path = str(Path(bundle.path).resolve())
    if ship_bundle:
        # Spark ships files and archives, not local folders: the bundle goes as a zip it unpacks.
        archive = shutil.make_archive(str(staging / f"_bundle-{bundle.bundle_id}"), "zip", bundle_path)
        spark.sparkContext.addArchive(archive)
        bundle_path = "shipped:" + Path(archive).name
    for table in tables:
        schema = pa.schema([pa.field("model", pa.string(), nullable=False), *bundle.table_schema(table)])

        def run(batches: Iterator[pa.RecordBatch], table: str = table,
                schema: pa.Schema = schema) -> Iterator[pa.RecordBatch]:
            return score_ranges(batches, bundle_path, table, top_n, threads, schema, ranking_only)

        out = frame.mapInArrow(run, from_arrow_schema(schema))
        (out.write.mode("errorifexists").partitionBy("model").option("compression", "zstd")
         .parquet(str(staging / table)))
        _remove_writer_files(staging / table)
    if ship_bundle:
        Path(archive).unlink()


def _remove_writer_files(folder: Path) -> None:
    """Spark's own ``_SUCCESS`` and checksum files: the run has its own ``_SUCCESS``, at the top."""
    for path in list(folder.rglob("_SUCCESS")) + list(folder.rglob(".*.crc")):
        path.unlink()
