"""``python -m export``: train the three models, export them to ONNX and publish a bundle."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import torch

from scoring.bundle import read_manifest, verify_files
from scoring.cli import parse_names
from scoring.cli_support import run_cli
from scoring.errors import BundleError, UsageError
from scoring.paths import DEFAULT_ARTIFACTS_ROOT, DEFAULT_DATA_DIR
from scoring.publish import resolve_latest
from scoring.schema import MODEL_NAMES

from .config import RunConfig
from .loading import DataSource, load_dataset
from .metrics import POST_RMSE_UNIT
from .synthetic import parse_shape
from .pipeline import build_bundle, code_fingerprint, run_fingerprint, seeds
from .workers import add_jobs_option, jobs_option, trained_as_completed

log = logging.getLogger("export")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Train MF, dense and LSTM rating models on MovieLens 100K (or given files), "
                    "export each to ONNX, check ONNX against torch, and publish a model bundle "
                    "under ARTIFACTS/<bundle-id> with ARTIFACTS/latest pointing at it. A bundle "
                    "whose data, settings and code are unchanged is reused, not retrained.")
    data = parser.add_argument_group("data (default: download and cache MovieLens 100K)")
    data.add_argument("--data-dir", type=Path, help="an ml-100k folder with u.data (and optional u.item)")
    data.add_argument("--train-file", type=Path, help="training ratings in u.data format, e.g. u1.base")
    data.add_argument("--test-file", type=Path, help="test ratings in u.data format, e.g. u1.test")
    data.add_argument("--synthetic", metavar="USERS,ITEMS,RATINGS",
                      help="seeded synthetic ratings instead (or a shape name: ml-1m, ml-20m, ml-25m)")
    data.add_argument("--cache-dir", type=Path, default=DEFAULT_DATA_DIR,
                      help="download cache (default: %(default)s)")
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS_ROOT,
                        help="bundle root (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=RunConfig.seed, help="the one seed (default: %(default)s)")
    parser.add_argument("--models", default=",".join(MODEL_NAMES),
                        help="comma-separated models to train (default: %(default)s)")
    parser.add_argument("--max-epochs", type=int, help="cap every model's epochs (for quick runs)")
    parser.add_argument("--batch-size", type=int, help="override every model's mini-batch size")
    parser.add_argument("--time-budget", type=float, help="stop each model's training after this many seconds")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where torch trains (default: %(default)s; cuda needs a CUDA build of torch)")
    add_jobs_option(parser)
    parser.add_argument("--window", type=int, default=10, help="LSTM sequence length L (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="retrain even if an identical bundle exists")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def make_config(args: argparse.Namespace) -> RunConfig:
    """The run configuration the options describe."""
    device = getattr(args, "device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: this torch build sees no CUDA device (torch "
                         f"{torch.__version__}); train with --device cpu")
    config = RunConfig(seed=args.seed, models=parse_names("--models", args.models, MODEL_NAMES), device=device)
    if args.window < 2:
        raise UsageError(f"--window: expected an integer >= 2 (history plus the item to rate), got {args.window}")
    config = dataclasses.replace(config, lstm=dataclasses.replace(config.lstm, window=args.window))
    overrides = {"max_epochs": args.max_epochs, "batch_size": args.batch_size,
                 "time_budget_s": getattr(args, "time_budget", None)}
    for option, value in overrides.items():
        if value is None:
            continue
        if value < 1:
            raise UsageError(f"--{option.replace('_', '-').removesuffix('-s')}: expected a positive number, got {value}")
        for name in MODEL_NAMES:
            sub = config.model_config(name)
            sub = dataclasses.replace(sub, training=dataclasses.replace(sub.training, **{option: value}))
            config = dataclasses.replace(config, **{name: sub})
    return config


def reusable_bundle(artifacts: Path, fingerprint: str) -> Path | None:
    """The latest bundle if it was built from the same fingerprint and its files are intact."""
    latest = resolve_latest(artifacts)
    if latest is None:
        return None
    try:
        manifest = read_manifest(latest)
        verify_files(latest, manifest, list(manifest["files"]))
    except BundleError as exc:
        log.warning("existing bundle is not reusable: %s", exc)
        return None
    return latest if manifest.get("fingerprint") == fingerprint else None


def train_and_export(args: argparse.Namespace) -> Path:
    """Load data, train each model, export and publish; reuse an up-to-date bundle."""
    config = make_config(args)
    synthetic = parse_shape(args.synthetic) if args.synthetic else None
    source = DataSource(args.data_dir, args.train_file, args.test_file, args.cache_dir, synthetic)
    child = seeds(config.seed)
    dataset, checksums = load_dataset(source, config, np.random.default_rng(child["split"]))
    fingerprint = run_fingerprint(config, checksums, code_fingerprint(PROJECT_ROOT))
    if not args.force and (existing := reusable_bundle(args.artifacts, fingerprint)) is not None:
        log.info("bundle %s is up to date (same data, settings and code); not retraining", existing.name)
        return existing
    with closing(trained_as_completed(dataset, config, child, jobs_option(args.jobs, config))) as trained:
        bundle = build_bundle(dataset, trained, config, fingerprint, checksums, args.artifacts)
    exported = read_manifest(bundle)["models"]
    for name in config.models:
        m = exported[name]["test_metrics"]
        print(f"{name:6s} test RMSE {m['rmse_stars']:.4f} stars, MAE {m['mae_stars']:.4f}, "
              f"RMSE {m['rmse_unit']:.4f} on [0,1] (post: {POST_RMSE_UNIT[name]:.2f})")
    print(f"bundle: {bundle}")
    return bundle


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: train_and_export(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
