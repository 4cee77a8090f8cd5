"""``python -m export.verify`` (``make verify``): compare a published run with the torch models.

Loads each model's torch weights from the run's bundle, recomputes every (user, item)
prediction and every top-N list with torch, and fails on any difference beyond tolerance.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from scoring.bundle import PARITY_TOLERANCE, Bundle, load_bundle, torch_weights_file
from scoring.cli_support import run_cli
from scoring.errors import BundleError, VerificationError
from scoring.parity import allowed_difference
from scoring.paths import DEFAULT_OUTPUT_ROOT
from scoring.publish import LATEST
from scoring.topn import mask_seen, top_n
from scoring.writer import table_file

from .config import model_config_from_dict
from .families import FAMILIES, History
from .metrics import clipped_stars

log = logging.getLogger(__name__)
STARS_TOLERANCE = 4 * PARITY_TOLERANCE
"""The parity tolerance carried from the [0, 1] scale to stars."""


def load_torch_model(bundle: Bundle, name: str) -> torch.nn.Module:
    """Rebuild a trained module from the bundle's config and ``state_dict``."""
    config = model_config_from_dict(name, bundle.manifest["config"][name])
    module = FAMILIES[name].build(config, bundle.n_users, bundle.n_items, 0.0)
    path = bundle.path / torch_weights_file(name)
    if not path.is_file():
        raise BundleError(f"{path}: torch weights are missing")
    try:
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as exc:
        raise BundleError(f"{path}: these weights do not fit this code's {name} model (a bundle trained by an "
                          f"older version? retrain it with `make train`): {exc}") from exc
    return module.eval()


def torch_outputs(bundle: Bundle, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Torch scores on [0, 1] and ranking logits for every pair, each [n_users, n_items],
    through the pairwise model."""
    module = load_torch_model(bundle, name)
    family = FAMILIES[name]
    history = History(bundle.history_items, bundle.history_ratings)
    scores = np.empty((bundle.n_users, bundle.n_items), np.float32)
    ranks = np.empty_like(scores)
    step = max(1, 65_536 // bundle.n_items)
    module.eval()
    with torch.no_grad():
        for start in range(0, bundle.n_users, step):
            users = np.arange(start, min(start + step, bundle.n_users))
            u = np.repeat(users, bundle.n_items)
            i = np.tile(np.arange(bundle.n_items), len(users))
            inputs = family.pair_inputs(u, i, history)
            scores[users] = family.predict(module, inputs).numpy().reshape(len(users), bundle.n_items)
            ranks[users] = family.rank(module, inputs).numpy().reshape(len(users), bundle.n_items)
    return scores, ranks


def _as_matrix(path: Path, bundle: Bundle) -> np.ndarray:
    table = pq.read_table(path)
    users = bundle_index(bundle.user_ids, table.column("user_id").to_numpy(), path, "user_id")
    items = bundle_index(bundle.item_ids, table.column("item_id").to_numpy(), path, "item_id")
    matrix = np.full((bundle.n_users, bundle.n_items), np.nan, np.float32)
    matrix[users, items] = table.column("prediction").to_numpy()
    if table.num_rows != matrix.size or np.isnan(matrix).any():
        raise VerificationError(f"{path}: does not hold exactly one row per (user, item) pair")
    return matrix


def bundle_index(known: np.ndarray, raw: np.ndarray, path: Path, column: str) -> np.ndarray:
    """Indices of raw ids in the bundle's ascending id array; VerificationError for unknown ids."""
    index = np.minimum(np.searchsorted(known, raw), len(known) - 1)
    bad = known[index] != raw
    if bad.any():
        raise VerificationError(f"{path}: column '{column}' holds ids not in the bundle: {raw[bad][:5].tolist()}")
    return index


def verify_predictions(run_dir: Path, bundle: Bundle, model: str, scores: np.ndarray) -> float:
    """Largest |table - torch| in stars over every pair; VerificationError beyond tolerance."""
    path = table_file(run_dir, "predictions", model)
    diff = np.abs(_as_matrix(path, bundle) - clipped_stars(scores))
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    if diff[worst] > STARS_TOLERANCE:
        raise VerificationError(f"{path}: prediction for user_id {bundle.user_ids[worst[0]]}, item_id "
                                f"{bundle.item_ids[worst[1]]} differs from torch by {diff[worst]:.3g} stars "
                                f"(tolerance {STARS_TOLERANCE:g})")
    return float(diff[worst])


def verify_recommendations(run_dir: Path, bundle: Bundle, model: str, scores: np.ndarray,
                           ranks: np.ndarray, n: int) -> int:
    """Check every top-N list against torch's; lists may differ only between near-tied logits."""
    path = table_file(run_dir, "recommendations", model)
    table = pq.read_table(path).to_pandas()
    users = bundle_index(bundle.user_ids, table["user_id"].to_numpy(), path, "user_id")
    items = bundle_index(bundle.item_ids, table["item_id"].to_numpy(), path, "item_id")
    masked = mask_seen(ranks, bundle.seen_indptr, bundle.seen_items)
    expected, valid = top_n(masked, n)
    if len(table) != int(valid.sum()):
        raise VerificationError(f"{path}: {len(table)} rows; torch gives {int(valid.sum())} recommendations")
    ranks = table["rank"].to_numpy().astype(np.int64) - 1
    if (ranks < 0).any() or (ranks >= expected.shape[1]).any() or not valid[users, ranks].all():
        raise VerificationError(f"{path}: ranks outside 1..{expected.shape[1]} or beyond a user's unseen items")
    ours = masked[users, items]
    theirs = masked[users, expected[users, ranks]]
    gap = np.abs(ours - theirs)
    gap[~np.isfinite(ours)] = np.inf
    excess = gap / allowed_difference(theirs, logits=True)
    worst = int(np.argmax(excess)) if len(gap) else 0
    if len(gap) and excess[worst] > 1:
        raise VerificationError(
            f"{path}: user_id {bundle.user_ids[users[worst]]} rank {ranks[worst] + 1} holds item_id "
            f"{bundle.item_ids[items[worst]]}; torch ranks item_id {bundle.item_ids[expected[users[worst], ranks[worst]]]} "
            f"there (rank-logit gap {gap[worst]:.3g}, or a seen item)")
    stars = clipped_stars(scores[users, items])
    if np.abs(stars - table["prediction"].to_numpy()).max(initial=0) > STARS_TOLERANCE:
        raise VerificationError(f"{path}: a recommendation's prediction differs from torch's rating")
    if (np.abs(ours - table["score"].to_numpy()) > allowed_difference(ours, logits=True)).any():
        raise VerificationError(f"{path}: a recommendation's score differs from torch's ranking logit")
    return int((expected[users, ranks] != items).sum())


def verify_run(run_dir: Path) -> dict[str, dict[str, float]]:
    """Verify every model and table of a published run; return the figures per model."""
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise VerificationError(f"{manifest_path}: no published run here (run `make score` first)")
    manifest = json.loads(manifest_path.read_text())
    bundle = load_bundle(Path(manifest["bundle"]["path"]), manifest["models"])
    figures = {}
    for model in manifest["models"]:
        scores, ranks = torch_outputs(bundle, model)
        figure: dict[str, float] = {}
        if "predictions" in manifest["tables"]:
            figure["max_abs_diff_stars"] = verify_predictions(run_dir, bundle, model, scores)
        if "recommendations" in manifest["tables"]:
            figure["tie_swaps"] = verify_recommendations(run_dir, bundle, model, scores, ranks,
                                                        manifest["top_n"])
        log.info("%s: every row matches torch %s", model, figure)
        figures[model] = figure
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.verify", description=__doc__)
    parser.add_argument("--run", type=Path, default=DEFAULT_OUTPUT_ROOT / LATEST,
                        help="published run directory (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    def action() -> None:
        figures = verify_run(args.run)
        print(json.dumps({"run": str(args.run.resolve()), "verified": figures}, indent=2))

    return run_cli(action, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
