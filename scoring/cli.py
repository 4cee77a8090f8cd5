"""``python -m scoring``: score every user-item pair with a model bundle and publish Parquet tables."""
from __future__ import annotations

import argparse
import sys

from contract.cli import add_scheduler_options, run_cli, setup_failure
from contract.errors import RecJobError
from contract.machine import available_cpus
from contract.paths import DEFAULT_ARTIFACTS_ROOT, DEFAULT_OUTPUT_ROOT
from contract.metrics import Sample
from contract.publish import LATEST
from contract.retention import DEFAULT_KEEP
from contract.store import parse_location

from .drift import DriftLimits, RunFiles
from .options import DEFAULT_CHUNK_PAIRS, ENGINES, RANKING_CHUNK_PAIRS, ScoringOptions
from .run_metrics import run_samples
from .runner import run_scoring
from .settings import DEFAULT_SIMILAR_K, DEFAULT_TOP_N
from .spark_options import WRITERS, SparkOptions, parse_conf, under_spark_submit
from .tables import DEFAULT_TABLES, names


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scoring",
        description="Score every (user, item) pair of a model bundle's catalogue with onnxruntime, "
                    "write predictions, top-N recommendations and similar items as Hive-partitioned Parquet, check "
                    "the results against the bundle's torch reference, and publish the run "
                    "atomically under OUTPUT_ROOT/<run-id> with OUTPUT_ROOT/latest pointing at it.")
    parser.add_argument("--bundle", type=parse_location, default=DEFAULT_ARTIFACTS_ROOT / LATEST,
                        help="model bundle directory, or on a store an artifacts root (its _LATEST bundle) or "
                             "one bundle, e.g. s3://bucket/artifacts (default: %(default)s)")
    parser.add_argument("--output-root", type=parse_location, default=DEFAULT_OUTPUT_ROOT,
                        help="where runs are published: a directory, or a store URI such as s3://bucket/recs "
                             "(default: %(default)s)")
    parser.add_argument("--top-n", type=int, default=DEFAULT_TOP_N,
                        help="recommendations per user (default: %(default)s)")
    parser.add_argument("--models", help="comma-separated models to score (default: every model in the bundle)")
    parser.add_argument("--tables", default=",".join(DEFAULT_TABLES),
                        help=f"tables to write, of {','.join(names())} (default: %(default)s)")
    parser.add_argument("--similar-k", type=int, default=DEFAULT_SIMILAR_K,
                        help="similar items per item in the similar_items table (default: %(default)s)")
    parser.add_argument("--exclude-items", type=parse_location, metavar="PATH",
                        help="Parquet or CSV of item ids (column item_id, or its only column) never recommended "
                             "nor listed as similar")
    parser.add_argument("--candidates", type=parse_location, metavar="PATH",
                        help="Parquet or CSV of item ids (column item_id, or its only column): recommendations "
                             "and similar items are drawn from these only")
    parser.add_argument("--chunk-pairs", type=int, default=None,
                        help=f"user-item pairs per onnxruntime call; bounds memory (default: {DEFAULT_CHUNK_PAIRS:,}; "
                             f"{RANKING_CHUNK_PAIRS:,} when only recommendations are written)")
    parser.add_argument("--threads", type=int, default=available_cpus(),
                        help="onnxruntime intra-op threads (default: the CPUs this process may use, %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="onnxruntime execution provider (default: %(default)s)")
    parser.add_argument("--engine", choices=ENGINES, default="spark" if under_spark_submit() else "local",
                        help="score in this process, or in Spark's Python workers (default: spark under "
                             "spark-submit, else local)")
    parser.add_argument("--spark-master", help="Spark master URL (default: what spark-submit or the environment "
                                               "set, else local[*])")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                        help="a Spark setting; repeatable")
    parser.add_argument("--spark-ship-bundle", action="store_true",
                        help="send the bundle to every executor instead of reading it from a path they all see")
    parser.add_argument("--spark-writer", choices=WRITERS, default="tasks",
                        help="tasks: each task writes its users' part files with this job's own Parquet writer "
                             "(fast); spark: Spark's DataFrame writer, one job per table (default: %(default)s)")
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP,
                        help="published runs to keep under the output root, the newest; 0 keeps all "
                             "(default: %(default)s)")
    parser.add_argument("--max-topn-change", type=float, metavar="SHARE",
                        help="refuse to publish (exit 3) if a model's top-N lists changed for more than this "
                             "share of users since the last run, e.g. 0.5")
    parser.add_argument("--max-prediction-change", type=float, metavar="RATING",
                        help="refuse to publish (exit 3) if a model's predictions moved by more than this on "
                             "average since the last run")
    parser.add_argument("--no-report", action="store_true", help="do not write report.html into the run")
    parser.add_argument("--wait", action="store_true",
                        help="wait for another run on the same output root instead of exiting")
    add_scheduler_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()   # lists every registered table: installed ones load here
    except RecJobError as exc:
        return setup_failure(exc)
    args = parser.parse_args(argv)

    def action() -> list[Sample]:
        options = ScoringOptions(
            bundle=args.bundle, output_root=args.output_root, top_n=args.top_n,
            models=None if args.models is None else _names(args.models), tables=_names(args.tables),
            similar_k=args.similar_k, exclude_items=args.exclude_items, candidates=args.candidates,
            chunk_pairs=args.chunk_pairs, threads=args.threads, device=args.device, wait=args.wait,
            report=not args.no_report, engine=args.engine,
            spark=SparkOptions(args.spark_master, parse_conf(args.spark_conf), args.spark_ship_bundle,
                               args.spark_writer),
            keep=args.keep, limits=DriftLimits(args.max_topn_change, args.max_prediction_change))
        run = run_scoring(options)
        print(run)
        return run_samples(RunFiles.at(run).manifest())

    return run_cli(action, args.verbose, log_format=args.log_format, metrics_file=args.metrics_file, job="scoring")


if __name__ == "__main__":
    sys.exit(main())
