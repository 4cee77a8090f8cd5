"""``python -m export``: train the models, export them to ONNX and publish a bundle."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from contract.cli import parse_names, run_cli
from contract.errors import UsageError
from contract.paths import DEFAULT_ARTIFACTS_ROOT, DEFAULT_DATA_DIR
from scoring.bundle import read_manifest

from .config import RunConfig
from .data.loading import DataSource
from .data.synthetic import parse_shape
from .models import registry
from .pipeline import train_and_export
from .training.workers import add_jobs_option, jobs_option


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Train rating models (by default mf, dense and lstm) on MovieLens 100K or given "
                    "files, export each to ONNX, check ONNX against torch, and publish a model bundle "
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
    add_training_options(parser)
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS_ROOT,
                        help="bundle root (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, help="override every model's mini-batch size")
    parser.add_argument("--time-budget", type=float, help="stop each model's training after this many seconds")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where torch trains (default: %(default)s; cuda needs a CUDA build of torch)")
    parser.add_argument("--force", action="store_true", help="retrain even if an identical bundle exists")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that train: seed, models, epochs, LSTM window, jobs."""
    parser.add_argument("--seed", type=int, default=RunConfig.seed, help="the one seed (default: %(default)s)")
    parser.add_argument("--models", default=",".join(registry.names()),
                        help="comma-separated models to train (default: %(default)s)")
    parser.add_argument("--max-epochs", type=int, help="cap every model's epochs (for quick runs)")
    parser.add_argument("--window", type=int, help="LSTM sequence length L (default: 10)")
    add_jobs_option(parser)


def make_config(args: argparse.Namespace) -> RunConfig:
    """The run configuration the options describe (the configs check their own values)."""
    device = getattr(args, "device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: this torch build sees no CUDA device (torch "
                         f"{torch.__version__}); train with --device cpu")
    config = RunConfig(seed=args.seed, models=parse_names("--models", args.models, registry.names()), device=device)
    if args.window is not None and "lstm" in config.models:
        config = config.replace_model("lstm", window=args.window)
    overrides = {"max_epochs": args.max_epochs, "batch_size": getattr(args, "batch_size", None),
                 "time_budget_s": getattr(args, "time_budget", None)}
    for option, value in overrides.items():
        if value is None:
            continue
        if value < 1:
            raise UsageError(f"--{option.replace('_', '-').removesuffix('-s')}: expected a positive number, got {value}")
        config = config.replace_training(**{option: value})
    return config


def data_source(args: argparse.Namespace) -> DataSource:
    return DataSource(args.data_dir, args.train_file, args.test_file, args.cache_dir,
                      parse_shape(args.synthetic) if args.synthetic else None)


def run(args: argparse.Namespace) -> Path:
    config = make_config(args)
    bundle = train_and_export(config, data_source(args), args.artifacts, jobs_option(args.jobs, config), args.force)
    exported = read_manifest(bundle)["models"]
    for name in config.models:
        m = exported[name]["test_metrics"]
        print(f"{name:6s} test RMSE {m['rmse_stars']:.4f}, MAE {m['mae_stars']:.4f} on the rating scale, "
              f"RMSE {m['rmse_unit']:.4f} on [0, 1]")
    print(f"bundle: {bundle}")
    return bundle


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
