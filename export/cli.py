"""``python -m export``: train the models, export them to ONNX and publish a bundle."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from contract.cli import add_scheduler_options, parse_names, run_cli, setup_failure
from contract.errors import RecJobError, UsageError
from contract.metrics import Sample
from contract.paths import DEFAULT_ARTIFACTS_ROOT, DEFAULT_DATA_DIR, DEFAULT_OUTPUT_ROOT
from contract.retention import DEFAULT_KEEP
from contract.scale import RatingScale
from contract.store import parse_location
from scoring.bundle import read_manifest
from scoring.bundle_fetch import local_bundle

from .config import RunConfig
from contract.feedback import EXPLICIT, FEEDBACK_KINDS

from .data.columns import INTERACTION_ROLES, ITEM_ROLES, ColumnMapping
from .data.loading import DataSource, parse_as_of
from .data.ratings_file import DUPLICATE_POLICIES, RatingsOptions
from .data.synthetic import parse_shape
from .models import registry
from .models.base import FamilyOption
from .bundle import PublishPolicy
from .data_checks import DataCheckOptions
from .gate import GateOptions, gate_samples
from .pipeline import train_and_export
from .training.workers import add_jobs_option, jobs_option


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Train rating models (by default mf, dense and lstm) on MovieLens 100K or given "
                    "files, export each to ONNX, check ONNX against torch, and publish a model bundle "
                    "under ARTIFACTS/<bundle-id> with ARTIFACTS/latest pointing at it. A bundle "
                    "whose data, settings and code are unchanged is reused, not retrained.")
    add_data_options(parser)
    add_training_options(parser)
    parser.add_argument("--artifacts", type=parse_location, default=DEFAULT_ARTIFACTS_ROOT,
                        help="bundle root: a directory, or a store URI such as s3://bucket/artifacts "
                             "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, help="override every model's mini-batch size")
    parser.add_argument("--time-budget", type=float, help="stop each model's training after this many seconds")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where torch trains (default: %(default)s; cuda needs a CUDA build of torch)")
    parser.add_argument("--force", action="store_true", help="retrain even if an identical bundle exists")
    parser.add_argument("--max-regression", type=float, default=GateOptions.max_regression, metavar="SHARE",
                        help="model gate: refuse the new bundle (exit 3; kept, not made latest) if any model's RMSE "
                             "is worse, or its NDCG@10 lower, than the current bundle's by more than this share and "
                             "by more than chance (default: %(default)s)")
    parser.add_argument("--accept-worse", action="store_true",
                        help="publish the new bundle as latest even if the model gate refuses it, or if it has no "
                             "held-out rating to be judged on")
    parser.add_argument("--max-data-shrink", type=float, default=DataCheckOptions.max_shrink, metavar="SHARE",
                        help="refuse to train (exit 3) if the ratings, users or items shrank by more than this share "
                             "since the current bundle's data (default: %(default)s)")
    parser.add_argument("--accept-data-change", action="store_true",
                        help="train and publish even though the data shrank past --max-data-shrink, its id type or "
                             "its rating scale changed, or the models cannot be compared with the current ones")
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP,
                        help="bundles to keep under ARTIFACTS, the newest, besides any a kept scoring run under "
                             "--output-root was scored from; 0 keeps all (default: %(default)s)")
    parser.add_argument("--output-root", type=parse_location, default=DEFAULT_OUTPUT_ROOT,
                        help="the scoring runs' root, whose bundles retention keeps (default: %(default)s)")
    add_scheduler_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Where the ratings come from and how they are read; shared by the commands that train."""
    data = parser.add_argument_group(
        "data (default: download and cache MovieLens 100K)",
        "PATH: a Parquet file, a folder or glob of Parquet part files (Hive-partitioned too), or a "
        "delimited text file (tab, comma, '::' or '|'; with or without a header; .gz or .zst too).")
    data.add_argument("--feedback", choices=FEEDBACK_KINDS, default=EXPLICIT,
                      help="explicit: a rating per row; implicit: each row one interaction (a click, play or "
                           "purchase), with no rating, weighed by an optional weight column (default: %(default)s)")
    data.add_argument("--ratings", metavar="PATH", help="ratings to split into train/validation/test")
    data.add_argument("--train-file", metavar="PATH", help="training ratings (with --test-file)")
    data.add_argument("--test-file", metavar="PATH", help="test ratings (with --train-file)")
    data.add_argument("--data-dir", type=Path, help="an ml-100k folder with u.data (and optional u.item)")
    data.add_argument("--items", metavar="PATH", help="item titles (default: u.item, movies.dat or movies.csv "
                                                       "beside the ratings, if there is one)")
    data.add_argument("--columns", metavar="ROLE=COLUMN,...",
                      help="which column holds user, item, rating and timestamp (and, for implicit feedback, "
                           "weight): names, or positions from 0 for files without a header (default: "
                           "userId/user_id/user, movieId/itemId/item_id/item, rating, timestamp/ts/time, weight; "
                           "by position: 0, 1, 2, 3)")
    data.add_argument("--item-columns", metavar="ROLE=COLUMN,...", help="which column holds item and title")
    data.add_argument("--rating-scale", metavar="MIN,MAX",
                      help="the ratings' scale (default: the lowest and highest rating seen)")
    data.add_argument("--duplicates", choices=DUPLICATE_POLICIES,
                      help="a (user, item) pair rated more than once: refuse it, keep the latest rating, "
                           "average them, or add up the weights (implicit feedback) (default: error for ratings, "
                           "sum for implicit feedback)")
    data.add_argument("--order-by", metavar="COLUMN",
                      help="a column that orders each user's ratings, for data without a timestamp")
    data.add_argument("--string-ids", action="store_true", help="read every id as text, even ids that look "
                                                                 "like integers")
    data.add_argument("--as-of", metavar="TIMESTAMP",
                      help="train on the ratings up to this time only: Unix seconds or an ISO 8601 date or "
                           "date-time, UTC unless it names a zone (backfills; reproducing an old run)")
    data.add_argument("--synthetic", metavar="USERS,ITEMS,RATINGS",
                      help="seeded synthetic ratings instead (or a shape name: ml-1m, ml-20m, ml-25m)")
    data.add_argument("--cache-dir", type=Path, default=DEFAULT_DATA_DIR,
                      help="download cache (default: %(default)s)")


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that train: seed, models, epochs, each family's own, jobs."""
    parser.add_argument("--seed", type=int, default=RunConfig.seed, help="the one seed (default: %(default)s)")
    parser.add_argument("--models", help=f"comma-separated models to train (default: {','.join(registry.names())}; "
                                         "without an order of each user's ratings, those that need one are left out)")
    parser.add_argument("--max-epochs", type=int, help="cap every model's epochs (for quick runs)")
    for family in registry.registered():
        for option in family.options:
            parser.add_argument(option.flag, type=option.type, dest=_option_dest(family.name, option),
                                metavar=option.field.upper(),
                                help=f"{option.help} [{family.name}]")
    add_jobs_option(parser)


def _option_dest(family: str, option: FamilyOption) -> str:
    return f"family_{family}_{option.field}"


def make_config(args: argparse.Namespace) -> RunConfig:
    """The run configuration the options describe (the configs check their own values)."""
    device = getattr(args, "device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: this torch build sees no CUDA device (torch "
                         f"{torch.__version__}); train with --device cpu")
    models = registry.names() if args.models is None else parse_names("--models", args.models, registry.names())
    config = RunConfig(seed=args.seed, models=models, device=device)
    for name in config.models:
        for option in registry.get(name).options:
            value = getattr(args, _option_dest(name, option), None)
            if value is not None:
                config = config.replace_model(name, **{option.field: value})
    overrides = {"max_epochs": args.max_epochs, "batch_size": getattr(args, "batch_size", None),
                 "time_budget_s": getattr(args, "time_budget", None)}
    for option, value in overrides.items():
        if value is None:
            continue
        if value < 1:
            raise UsageError(f"--{option.replace('_', '-').removesuffix('-s')}: expected a positive number, got {value}")
        config = config.replace_training(**{option: value})
    return config


def parse_scale(text: str | None) -> RatingScale | None:
    if text is None:
        return None
    try:
        low, high = (float(x) for x in text.split(","))
        return RatingScale(low, high)
    except ValueError:
        raise UsageError(f"--rating-scale: expected MIN,MAX with MIN < MAX, got {text!r}") from None


def data_source(args: argparse.Namespace) -> DataSource:
    options = RatingsOptions(ColumnMapping.parse(args.columns, INTERACTION_ROLES), args.string_ids, args.order_by,
                             args.duplicates, args.feedback)
    return DataSource(ratings=args.ratings, data_dir=args.data_dir, train_file=args.train_file,
                      test_file=args.test_file, items=args.items, cache_dir=args.cache_dir,
                      synthetic=parse_shape(args.synthetic) if args.synthetic else None, options=options,
                      item_columns=ColumnMapping.parse(args.item_columns, ITEM_ROLES, "--item-columns"),
                      rating_scale=parse_scale(args.rating_scale), as_of=parse_as_of(args.as_of))


def publish_policy(args: argparse.Namespace) -> PublishPolicy:
    if not args.max_regression >= 0:
        raise UsageError(f"--max-regression: expected a share of at least 0, e.g. 0.01, got {args.max_regression}")
    if args.keep < 0:
        raise UsageError(f"--keep: expected 0 (keep all) or a positive integer, got {args.keep}")
    if not 0 <= args.max_data_shrink <= 1:
        raise UsageError(f"--max-data-shrink: expected a share from 0 to 1, e.g. 0.5, got {args.max_data_shrink}")
    return PublishPolicy(GateOptions(args.max_regression, args.accept_worse, args.accept_data_change), args.keep,
                         args.output_root, DataCheckOptions(args.max_data_shrink, args.accept_data_change))


def bundle_samples(manifest: dict) -> list[Sample]:
    """A published bundle's figures for ``--metrics-file``."""
    out = [Sample("bundle", 1, {"bundle_id": manifest["bundle_id"]}, "the bundle now latest")]
    for name in manifest["model_names"]:
        entry = manifest["models"][name]
        metrics = entry["test_metrics"]
        if manifest.get("feedback", EXPLICIT) == EXPLICIT:
            out.append(Sample("test_rmse", _number(metrics["rmse_stars"]), {"model": name},
                              "held-out RMSE on the rating scale"))
        else:
            out += [Sample("test_ndcg_at_10", _number(metrics["ndcg_at_10"]), {"model": name},
                           "held-out NDCG@10, every held-out interaction relevant"),
                    Sample("test_recall_at_20", _number(metrics["recall_at_20"]), {"model": name},
                           "held-out recall@20, every held-out interaction relevant")]
        out.append(Sample("train_seconds", entry["train_seconds"], {"model": name}, "training wall time"))
    return out + (gate_samples(manifest["gate"]) if "gate" in manifest else [])


def _number(value: float | None) -> float:
    """A figure the manifest may hold as null (none could be measured) as a float: NaN then."""
    return float("nan") if value is None else value


def run(args: argparse.Namespace) -> list[Sample]:
    config = make_config(args)
    bundle = train_and_export(config, data_source(args), args.artifacts, jobs_option(args.jobs), args.force,
                              models_given=args.models is not None, policy=publish_policy(args))
    manifest = read_manifest(local_bundle(bundle))
    for name in manifest["model_names"]:
        m = manifest["models"][name]["test_metrics"]
        if manifest.get("feedback", EXPLICIT) == EXPLICIT:
            print(f"{name:6s} test RMSE {_number(m['rmse_stars']):.4f}, MAE {_number(m['mae_stars']):.4f} on the "
                  f"rating scale, RMSE {_number(m['rmse_unit']):.4f} on [0, 1]")
        else:
            print(f"{name:6s} test NDCG@10 {_number(m['ndcg_at_10']):.4f}, recall@20 {_number(m['recall_at_20']):.4f}, "
                  f"MAP@10 {_number(m['map_at_10']):.4f} (implicit feedback: every held-out interaction relevant)")
    print(f"bundle: {bundle}")
    return bundle_samples(manifest)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()   # lists every registered family's options: installed ones load here
    except RecJobError as exc:
        return setup_failure(exc)
    args = parser.parse_args(argv)
    return run_cli(lambda: run(args), args.verbose, log_format=args.log_format, metrics_file=args.metrics_file,
                   job="export")


if __name__ == "__main__":
    sys.exit(main())
