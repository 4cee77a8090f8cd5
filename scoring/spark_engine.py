"""``--engine spark``: the scoring job's own code in Spark's Python workers.

A DataFrame of spans, one per task (a model, a unit, users or items from start to stop), goes
through ``mapInArrow``; each Python worker loads the bundle once (cached per process; only its
path travels with the function) and runs the local engine's pass (``model_pass``) over each
span: the same tables' rows, masking, top-N and parity checks against the bundle's torch outputs.
By default each task writes its span's part files with the local engine's Parquet writer and
returns their names; the driver keeps the files of accepted attempts only, so a retried or
speculative task neither loses nor duplicates rows.
With ``writer="spark"`` the tasks yield the rows and Spark's Parquet writer writes each table,
partitioned by ``model``. Either way the runner then checks and publishes as for a local run.
Nothing here needs pandas.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from contract.errors import BundleError, RecJobError, UsageError, VerificationError
from contract.failpoints import ENVIRONMENT_VARIABLE
from contract.pairs import user_ranges
from contract.progress import EVERY_S
from contract.store import Store, is_remote

from .bundle import Bundle, load_bundle
from .bundle_fetch import bundle_uri as bundle_of_run, local_bundle
from .model_pass import open_outlets, score_span
from .options import ScoringOptions
from .results import ModelResult
from .sessions import ModelScorer
from .settings import PassSettings
from .spark_attempts import attempts, job_failure
from .spark_options import SparkOptions, under_spark_submit
from .tables import UNITS, Table, chosen, needs_ratings

log = logging.getLogger(__name__)

TASK_FAILPOINT = "spark_task_first_attempt"
"""``RECJOB_FAILPOINT`` value that kills the Python worker of the first task on its first attempt."""
TASK_FAILPOINT_ALWAYS = "spark_task_every_attempt"
"""``RECJOB_FAILPOINT`` value that kills the Python worker of the first task on every attempt."""
JOB_GROUP = "recjob-scoring"
"""Spark job group of the scoring jobs, whose tasks' attempts the run counts."""


def session(options: SparkOptions) -> Any:
    """A SparkSession whose Python workers run this interpreter (unless PYSPARK_PYTHON says otherwise)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UsageError("--engine spark: pyspark is not installed (pip install '.[spark]'; it needs Java 17 or 21)") from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("recommender-scoring")
    # Under spark-submit the JVM is started already (it passes its gateway port) with its master set.
    submitted = under_spark_submit()
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
        # Spark's own log (its traces of failed tasks among it) only with --verbose: a failure
        # ends the run with one error line, the attempts are counted in the manifest.
        spark.sparkContext.setLogLevel("WARN" if log.isEnabledFor(logging.DEBUG) else "OFF")
        return spark
    except Exception as exc:  # noqa: BLE001 - the JVM's start-up failures come in many types
        raise UsageError(f"--engine spark: Spark did not start ({str(exc).splitlines()[0][:300]}); it needs "
                         "Java 17 or 21 on PATH or in JAVA_HOME") from exc


TASK_PAIRS = 4_194_304
"""Most user-item pairs one Spark task scores: each task writes a part file of this many
prediction rows at most, and a failed task repeats at most this much work."""
SHIPPED_PREFIX = "_bundle-"
"""Name prefix of the zipped bundle that ``--spark-ship-bundle`` leaves in staging while the job runs."""
TASKS_PER_CORE = 2
"""Tasks per executor core, at least, so that no core idles long while the last ones finish."""


@dataclass(frozen=True)
class TaskSpec:
    """What every task needs, sent with the function (small: the bundle travels by path)."""

    bundle_path: str
    """``shipped:<name>`` for a bundle sent with ``SparkContext.addArchive`` (unpacked as ``<name>``)."""
    tables: tuple[str, ...]
    settings: PassSettings
    ranking_only: bool
    """As the local engine decides it for the whole run, so both engines compute the same values."""
    threads: int
    staging: str
    run_id: str
    store_run: str | None = None
    """The run's folder on an object store, where tasks send their part files (None: they write to ``staging``)."""


_WORKER_BUNDLES: dict[str, Bundle] = {}
"""Bundles opened by this Python worker, by bundle path as the driver gave it."""
_WORKER_SCORERS: dict[tuple[str, str, bool], ModelScorer] = {}
"""Scorers opened by this Python worker, by (bundle path, model, ranking only)."""


def _bundle(bundle_path: str) -> Bundle:
    """The bundle, loaded and checked once per Python worker (the preflight task loads it first).
    ``bundle_path`` is ``shipped:<name>`` for a bundle sent with ``SparkContext.addArchive``."""
    if bundle_path not in _WORKER_BUNDLES:
        local = bundle_path
        if local.startswith("shipped:"):
            from pyspark import SparkFiles
            local = SparkFiles.get(local.removeprefix("shipped:"))
        _WORKER_BUNDLES[bundle_path] = load_bundle(local_bundle(local))
    return _WORKER_BUNDLES[bundle_path]


def _scorer(spec: TaskSpec, model: str) -> tuple[Bundle, ModelScorer]:
    """The bundle and a scorer of ``model``, opened once per Python worker."""
    bundle = _bundle(spec.bundle_path)
    key = (spec.bundle_path, model, spec.ranking_only)
    if key not in _WORKER_SCORERS:
        _WORKER_SCORERS[key] = ModelScorer.open(bundle.graphs(model), bundle.context, spec.threads,
                                                ranking_only=spec.ranking_only)
    return bundle, _WORKER_SCORERS[key]


def _maybe_die() -> None:
    """The retry tests' failpoints: the first task's first attempt (or every attempt) kills its
    own Python worker, after it has written its part files."""
    point = os.environ.get(ENVIRONMENT_VARIABLE)
    if point not in (TASK_FAILPOINT, TASK_FAILPOINT_ALWAYS):
        return
    from pyspark import TaskContext
    context = TaskContext.get()
    if context is not None and context.partitionId() == 0 and (
            point == TASK_FAILPOINT_ALWAYS or context.attemptNumber() == 0):
        os.kill(os.getpid(), signal.SIGKILL)


def _spans(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[str, str, int, int]]:
    for batch in batches:
        yield from zip(*(batch.column(k).to_pylist() for k in ("model", "unit", "start", "stop")))


def _tables(spec: TaskSpec, unit: str, only: str | None = None) -> tuple[Table, ...]:
    """The run's tables of one unit (or the one table ``only``)."""
    return tuple(t for t in chosen(spec.tables) if t.unit == unit and only in (None, t.name))


def _run_span(spec: TaskSpec, model: str, unit: str, outlets: dict, start: int, stop: int) -> ModelResult:
    """One span through the local engine's pass."""
    bundle = _bundle(spec.bundle_path)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="table-writer") as pool:
        return score_span(bundle, model, unit, outlets, spec.settings, lambda: _scorer(spec, model)[1], pool,
                          spec.threads, span=(start, stop))


REPORT_SCHEMA = pa.schema([pa.field("model", pa.string()), pa.field("unit", pa.string()),
                           pa.field("start", pa.int64()), pa.field("stop", pa.int64()),
                           pa.field("report", pa.string())])
"""What a task of the "tasks" writer returns per span: the span and, as JSON, its part files,
rows, parity and seconds."""


def write_span_parts(batches: Iterator[pa.RecordBatch], spec: TaskSpec) -> Iterator[pa.RecordBatch]:
    """Rows ``(model, unit, start, stop)`` in; each span scored by the local engine's pass,
    written as one part file per table (named by the span and a fresh token, so a retried attempt
    never writes over another's), and reported."""
    for model, unit, start, stop in _spans(batches):
        part = f"part-{start:010d}-{uuid.uuid4().hex[:12]}.parquet"
        folder = Path(tempfile.mkdtemp(prefix="recjob-task-")) if spec.store_run else Path(spec.staging)
        outlets = open_outlets(folder, _tables(spec, unit), _bundle(spec.bundle_path), model, spec.run_id, part)
        result = _run_span(spec, model, unit, outlets, start, stop)
        files = [w.path.relative_to(folder).as_posix() for _, w in outlets.values()]
        if spec.store_run:
            Store.open(spec.store_run).upload(folder, files, "")
            shutil.rmtree(folder, ignore_errors=True)
        report = {"files": files, "rows": result.rows, "parity_pairs": result.parity_pairs, "parity": result.parity,
                  "seconds": result.seconds}
        _maybe_die()
        yield pa.RecordBatch.from_pylist([{"model": model, "unit": unit, "start": start, "stop": stop,
                                           "report": json.dumps(report)}], schema=REPORT_SCHEMA)


class _Batches:
    """A table writer that keeps record batches, with their ``model`` column, for Spark's writer."""

    def __init__(self, schema: pa.Schema, model: str) -> None:
        self.schema, self.model, self.rows = schema, model, 0
        self.batches: list[pa.RecordBatch] = []

    def write(self, columns: dict[str, pa.Array]) -> None:
        rows = len(next(iter(columns.values())))
        arrays = [pa.array([self.model] * rows, pa.string()) if f.name == "model" else columns[f.name]
                  for f in self.schema]
        self.batches.append(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.rows += rows

    def close(self) -> None:
        pass


def span_table_rows(batches: Iterator[pa.RecordBatch], spec: TaskSpec, table: str,
                    schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Rows ``(model, unit, start, stop)`` of the table's unit in; the table's rows (with
    ``model``) of each span out, for Spark's writer. Each span's batches are held until its pass
    (and parity check) is done."""
    for model, unit, start, stop in _spans(batches):
        (chosen_table,) = _tables(spec, unit, table)
        writer = _Batches(schema, model)
        _run_span(spec, model, unit, {table: (chosen_table, writer)}, start, stop)
        _maybe_die()
        yield from writer.batches


PREFLIGHT_SCHEMA = pa.schema([pa.field("host", pa.string()), pa.field("problem", pa.string())])


def _preflight_task(batches: Iterator[pa.RecordBatch], bundle_path: str) -> Iterator[pa.RecordBatch]:
    """Whether this Python worker can open the bundle: the empty string, or what went wrong."""
    import socket
    for _ in batches:
        pass
    try:
        _bundle(bundle_path)
        problem = ""
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which fails the run with it
        problem = f"{type(exc).__name__}: {exc}"
    yield pa.RecordBatch.from_pylist([{"host": socket.gethostname(), "problem": problem}], schema=PREFLIGHT_SCHEMA)


def preflight(spark: Any, bundle_path: str) -> None:
    """A small job, one task per executor core, that starts Spark's Python workers and opens the
    bundle there: BundleError naming the host and the cause when an executor cannot, before
    anything is scored. It also takes the first job's start-up cost (Python workers, code
    generation), which is then timed apart from the scoring."""
    from pyspark.sql.pandas.types import from_arrow_schema
    cores = spark.sparkContext.defaultParallelism
    frame = spark.createDataFrame(spark.sparkContext.parallelize([(i,) for i in range(cores)], cores), "task long")
    rows = frame.mapInArrow(lambda batches: _preflight_task(batches, bundle_path),
                            from_arrow_schema(PREFLIGHT_SCHEMA)).collect()
    failed = [r for r in rows if r.problem]
    if failed:
        where = bundle_path if not bundle_path.startswith("shipped:") else "the shipped bundle"
        raise BundleError(f"Spark executor on {failed[0].host} cannot open {where} ({failed[0].problem}); the "
                          "bundle must be at a path every executor can read, or sent with --spark-ship-bundle")


def task_spans(bundle: Bundle, pairs_per_call: int, cores: int, units: tuple[str, ...] = ("users",)
               ) -> list[tuple[str, str, int, int]]:
    """``(model, unit, start, stop)`` spans, one per task. Users: at most ``TASK_PAIRS`` pairs each
    and at least ``TASKS_PER_CORE`` tasks per core in all (never below one onnxruntime call's
    worth). Items: ``TASKS_PER_CORE`` spans per core of each model's items."""
    spans: list[tuple[str, str, int, int]] = []
    if "users" in units:
        pairs = bundle.n_users * bundle.n_items * len(bundle.models)
        span_pairs = max(pairs_per_call, min(TASK_PAIRS, -(-pairs // (TASKS_PER_CORE * max(cores, 1)))))
        spans += [(model, "users", start, stop) for model in bundle.models
                  for start, stop in user_ranges(bundle.n_users, bundle.n_items, span_pairs)]
    if "items" in units:
        step = max(1, -(-bundle.n_items // (TASKS_PER_CORE * max(cores, 1))))
        spans += [(model, "items", start, min(start + step, bundle.n_items)) for model in bundle.models
                  for start in range(0, bundle.n_items, step)]
    return spans


def _spans_frame(spark: Any, spans: list[tuple[str, str, int, int]]) -> Any:
    """One span per partition, so each is a task of its own."""
    rdd = spark.sparkContext.parallelize(spans, len(spans))
    return spark.createDataFrame(rdd, "model string, unit string, start long, stop long")


def task_spec(spark: Any, bundle: Bundle, tables: tuple[str, ...], settings: PassSettings, staging: Path,
              run_id: str, ship_bundle: bool = False, bundle_uri: str | None = None,
              store_run: str | None = None) -> TaskSpec:
    """What the tasks need; with ``ship_bundle`` the bundle is zipped into ``staging`` and sent to
    every executor (Spark ships files and archives, not folders; it unpacks the zip there)."""
    bundle_path = bundle_uri or str(Path(bundle.path).resolve())
    if ship_bundle:
        archive = Path(shutil.make_archive(str(staging / f"{SHIPPED_PREFIX}{bundle.bundle_id}"), "zip", bundle_path))
        spark.sparkContext.addArchive(str(archive))
        bundle_path = "shipped:" + archive.name
    return TaskSpec(bundle_path, tables, settings, not needs_ratings(tables),
                    int(spark.conf.get("spark.task.cpus", "1")), str(staging.resolve()), run_id, store_run)


def write_tables(spark: Any, bundle: Bundle, spec: TaskSpec, writer: str = "tasks") -> dict[str, ModelResult]:
    """Score every model's users in Spark tasks and write each table under
    ``staging/<table>/model=<m>/``; the figures of each model's spans, where the tasks report
    them ("tasks" writer; Spark's writer returns the rows alone, each task having checked parity).
    A failed job is SparkJobError, one line naming the task, its attempts and the cause; Spark's
    own report goes to the debug log."""
    staging = Path(spec.staging)
    units = tuple(u for u in UNITS if _tables(spec, u))
    spans = task_spans(bundle, spec.settings.pairs_per_call, spark.sparkContext.defaultParallelism, units)
    spark.sparkContext.setJobGroup(JOB_GROUP, "recommender scoring")
    try:
        with _progress_lines(spark):
            return _run_jobs(spark, bundle, spec, spans, writer)
    except RecJobError:
        raise
    except Exception as exc:  # noqa: BLE001 - Py4JJavaError, PySpark's captured exceptions and more
        log.debug("Spark's own report of the failure", exc_info=True)
        raise job_failure(attempts(spark, JOB_GROUP), exc) from None
    finally:
        for archive in staging.glob(f"{SHIPPED_PREFIX}*.zip"):
            archive.unlink()


@contextmanager
def _progress_lines(spark: Any) -> Iterator[None]:
    """While the scoring jobs run, one line every ``progress.EVERY_S`` seconds: their tasks done of
    all, from Spark's status tracker."""
    done = threading.Event()
    started = time.perf_counter()

    def watch() -> None:
        tracker = spark.sparkContext.statusTracker()
        while not done.wait(EVERY_S):
            stages = [tracker.getStageInfo(stage) for job in tracker.getJobIdsForGroup(JOB_GROUP)
                      for stage in (getattr(tracker.getJobInfo(job), "stageIds", None) or ())]
            stages = [stage for stage in stages if stage is not None]
            log.info("spark: %d of %d tasks done, %.0f s", sum(stage.numCompletedTasks for stage in stages),
                     sum(stage.numTasks for stage in stages), time.perf_counter() - started)

    watcher = threading.Thread(target=watch, name="spark-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _run_jobs(spark: Any, bundle: Bundle, spec: TaskSpec, spans: list[tuple[str, str, int, int]],
              writer: str) -> dict[str, ModelResult]:
    """The scoring jobs themselves, with either writer."""
    from pyspark.sql.pandas.types import from_arrow_schema

    staging = Path(spec.staging)
    if writer == "tasks":
        rows = _spans_frame(spark, spans).mapInArrow(lambda batches: write_span_parts(batches, spec),
                                                      from_arrow_schema(REPORT_SCHEMA)).collect()
        return _committed(bundle, spec, [(r.model, r.unit, r.start, r.stop, json.loads(r.report)) for r in rows])
    for table in chosen(spec.tables):
        schema = pa.schema([pa.field("model", pa.string(), nullable=False), *table.schema(bundle)])

        def run(batches: Iterator[pa.RecordBatch], name: str = table.name,
                schema: pa.Schema = schema) -> Iterator[pa.RecordBatch]:
            return span_table_rows(batches, spec, name, schema)

        frame = _spans_frame(spark, [span for span in spans if span[1] == table.unit])
        (frame.mapInArrow(run, from_arrow_schema(schema)).write.mode("errorifexists").partitionBy("model")
         .option("compression", "zstd").parquet(str(staging / table.name)))
        _remove_writer_files(staging / table.name)
    # Spark's writer returns rows alone: each task checked its own reference points against the tolerance.
    return {m: ModelResult(parity={key: None for key in ("max_abs_diff", "logit_max_abs_diff")},
                           parity_pairs=int(len(bundle.references[m].users)), seconds={}) for m in bundle.models}


def _committed(bundle: Bundle, spec: TaskSpec, reports: list[tuple[str, str, int, int, dict]]) -> dict[str, ModelResult]:
    """Keep the part files of the attempts Spark accepted, one per span, and remove the rest (those
    of attempts that failed or were superseded); VerificationError unless each model's spans
    cover its users (and items) once. The figures of each model, summed (seconds, rows) or worst
    (parity)."""
    staging = Path(spec.staging)
    keep = {name for *_, report in reports for name in report["files"]}
    if spec.store_run:
        _keep_on_store(Store.open(spec.store_run), spec.tables, keep, staging)
    for table in spec.tables:
        for path in (staging / table).rglob("*"):
            if path.is_file() and path.relative_to(staging).as_posix() not in keep:
                path.unlink()
    results = {}
    for model in bundle.models:
        result = ModelResult(seconds={})
        for unit in sorted({u for _, u, *_ in reports}):
            mine = sorted((start, stop, report) for m, u, start, stop, report in reports if (m, u) == (model, unit))
            bounds = [(start, stop) for start, stop, _ in mine]
            total = bundle.n_users if unit == "users" else bundle.n_items
            if not _tiles(bounds, total):
                raise VerificationError(f"Spark returned {unit} spans {bounds} for model '{model}'; expected spans "
                                        f"covering {unit} 0 to {total} once")
            for _, _, report in mine:
                result.add(ModelResult(report["rows"], report["parity"], report["parity_pairs"], report["seconds"]))
        results[model] = result
    return results


def _keep_on_store(run: Store, tables: tuple[str, ...], keep: set[str], staging: Path) -> None:
    """Delete the part files on the store of attempts Spark did not accept, and copy the accepted
    ones into ``staging``, where the runner checks them (row counts, schemas, checksums) before
    the run is published; ``StoreRoot.publish`` then sends only what is not on the store yet."""
    for table in tables:
        folder = run.child(table)
        for name in folder.files():
            if f"{table}/{name}" not in keep:
                folder.delete(name)
        folder.download(staging / table)


def _tiles(bounds: list[tuple[int, int]], total: int) -> bool:
    """Whether sorted ``[start, stop)`` spans cover ``[0, total)`` exactly once."""
    reached = 0
    for start, stop in bounds:
        if start != reached or stop <= start:
            return False
        reached = stop
    return reached == total


def score(bundle: Bundle, options: ScoringOptions, settings: PassSettings, staging: Path, run_id: str,
          finished: Any = None) -> tuple[dict[str, ModelResult], dict[str, Any]]:
    """The engine (``scoring.local_engine`` says what one does): the tables written by Spark's
    tasks, each checking its span against torch's reference, and what Spark did with the tasks
    (failed attempts, retried tasks, lost executors). On a store the tasks send their own files,
    so ``finished`` is not called."""
    t = time.perf_counter()
    spark = session(options.spark)
    seconds = {"spark_start": time.perf_counter() - t}
    # On a store, executors fetch the bundle from it themselves and send their part files to it.
    bundle_uri = bundle_of_run(options.bundle, bundle.path) if is_remote(options.bundle) else None
    store_run = f"{options.output_root}/{run_id}" if is_remote(options.output_root) else None
    if store_run and options.spark.writer != "tasks":
        raise UsageError(f"--spark-writer {options.spark.writer}: on an object store the tasks write their part "
                         "files themselves; use --spark-writer tasks")
    spec = task_spec(spark, bundle, options.tables, settings, staging, run_id, options.spark.ship_bundle,
                     bundle_uri, store_run)
    t = time.perf_counter()
    preflight(spark, spec.bundle_path)
    seconds["spark_preflight"] = time.perf_counter() - t
    t = time.perf_counter()
    results = write_tables(spark, bundle, spec, options.spark.writer)
    seconds["spark_jobs"] = time.perf_counter() - t
    for result in results.values():
        result.seconds.update(seconds)
    log.info("spark: %s written in %.2f s (session start %.2f s, preflight %.2f s)", ", ".join(options.tables),
             seconds["spark_jobs"], seconds["spark_start"], seconds["spark_preflight"])
    record = attempts(spark, JOB_GROUP).record()
    if record["failed_task_attempts"] or record["lost_executors"]:
        log.warning("spark: %d task attempt(s) failed and were retried (tasks %s); %s executor(s) lost",
                    record["failed_task_attempts"], record["retried_tasks"], record["lost_executors"],
                    extra={"stage": "spark", "figures": record})
    return results, {"spark": record}


def _remove_writer_files(folder: Path) -> None:
    """Spark's own ``_SUCCESS`` and checksum files: the run has its own ``_SUCCESS``, at the top."""
    for path in list(folder.rglob("_SUCCESS")) + list(folder.rglob(".*.crc")):
        path.unlink()
