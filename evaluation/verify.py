"""``python -m evaluation.verify`` (``make verify``): compare a published run with the torch models.

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

from contract.bundle_format import PARITY_TOLERANCE
from contract.cli import run_cli
from contract.errors import VerificationError
from contract.ids import index_of
from contract.parity import allowed_difference
from contract.paths import DEFAULT_OUTPUT_ROOT
from contract.publish import LATEST
from scoring.bundle import Bundle, load_bundle
from scoring.topn import candidates_for, coherent_first, mask_seen, top_n
from scoring.writer import table_file

from .torch_models import torch_outputs

log = logging.getLogger(__name__)


def stars_tolerance(bundle: Bundle) -> float:
    """The parity tolerance on [0, 1] carried to the bundle's rating scale."""
    return PARITY_TOLERANCE * bundle.scale.span


def _as_matrix(path: Path, bundle: Bundle) -> np.ndarray:
    table = pq.read_table(path)
    users = index_of(bundle.user_ids, table.column("user_id").to_numpy(), VerificationError, f"{path}: column 'user_id'")
    items = index_of(bundle.item_ids, table.column("item_id").to_numpy(), VerificationError, f"{path}: column 'item_id'")
    matrix = np.full((bundle.n_users, bundle.n_items), np.nan, np.float32)
    matrix[users, items] = table.column("prediction").to_numpy()
    if table.num_rows != matrix.size or np.isnan(matrix).any():
        raise VerificationError(f"{path}: does not hold exactly one row per (user, item) pair")
    return matrix


def verify_predictions(run_dir: Path, bundle: Bundle, model: str, unit: np.ndarray) -> float:
    """Largest |table - torch| on the rating scale over every pair; VerificationError beyond tolerance."""
    path = table_file(run_dir, "predictions", model)
    diff = np.abs(_as_matrix(path, bundle) - bundle.scale.clipped_rating(unit))
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    if diff[worst] > stars_tolerance(bundle):
        raise VerificationError(f"{path}: prediction for user_id {bundle.user_ids[worst[0]]}, item_id "
                                f"{bundle.item_ids[worst[1]]} differs from torch by {diff[worst]:.3g} "
                                f"(tolerance {stars_tolerance(bundle):g})")
    return float(diff[worst])


def verify_recommendations(run_dir: Path, bundle: Bundle, model: str, unit: np.ndarray,
                           logits: np.ndarray, n: int) -> int:
    """Check every top-N list against torch's; lists may differ only between near-tied logits."""
    path = table_file(run_dir, "recommendations", model)
    table = pq.read_table(path).to_pandas()
    users = index_of(bundle.user_ids, table["user_id"].to_numpy(), VerificationError, f"{path}: column 'user_id'")
    items = index_of(bundle.item_ids, table["item_id"].to_numpy(), VerificationError, f"{path}: column 'item_id'")
    masked = mask_seen(logits, bundle.seen_indptr, bundle.seen_items)
    candidates, real = top_n(masked, candidates_for(n))
    rated = bundle.scale.clipped_rating(np.take_along_axis(unit, candidates, 1))
    expected, valid, _ = coherent_first(candidates, real, rated, bundle.coherence_midpoint, n)
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
            f"there (logit gap {gap[worst]:.3g}, or a seen item)")
    rating = bundle.scale.clipped_rating(unit[users, items])
    if np.abs(rating - table["prediction"].to_numpy()).max(initial=0) > stars_tolerance(bundle):
        raise VerificationError(f"{path}: a recommendation's prediction differs from torch's rating")
    if (np.abs(ours - table["logit"].to_numpy()) > allowed_difference(ours, logits=True)).any():
        raise VerificationError(f"{path}: a recommendation's logit differs from torch's ranking logit")
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
        unit, logits = torch_outputs(bundle, model)
        figure: dict[str, float] = {}
        if "predictions" in manifest["tables"]:
            figure["max_abs_diff_rating"] = verify_predictions(run_dir, bundle, model, unit)
        if "recommendations" in manifest["tables"]:
            figure["tie_swaps"] = verify_recommendations(run_dir, bundle, model, unit, logits, manifest["top_n"])
        log.info("%s: every row matches torch %s", model, figure)
        figures[model] = figure
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.verify", description=__doc__)
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
