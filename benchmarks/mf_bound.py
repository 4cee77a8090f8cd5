"""``python -m benchmarks.mf_bound``: the best test RMSE a biased matrix factorisation of a given
rank can reach on a synthetic catalogue, next to the floor of its planted truth.

Fits ``mean + b_u + b_i + <p_u, q_i>`` to the training ratings by alternating least squares: each
half-step solves every user's (then every item's) ridge regression exactly, so after enough
sweeps the factors are the optimum of the penalised objective, not wherever a gradient method
stopped. The penalty is the trainer's ``embedding_decay`` in its own units: squared error on the
[0, 1] scale plus ``penalty * (|p_u|² + |q_i|²)`` for every rating, the biases unpenalised (MF's
``bias_decay`` is 0). A row of the table so reads as what the MF family would reach with that
rank and decay if its training converged exactly. The split and seed are the benchmark's
(``python -m benchmarks.bench``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from contract.cli import run_cli
from export.config import RunConfig, child_seed
from export.data.dataset import Dataset, Interactions
from export.data.loading import DataSource, load_dataset
from export.data.synthetic import parse_shape
from export.training.metrics import rating_errors


OUTER_PRODUCT_VALUES = 1 << 25
"""Values of the per-rating outer products summed at once (256 MB): bounds memory at large ranks."""


@dataclass(frozen=True)
class BiasedFactors:
    """A fitted biased MF on the [0, 1] scale."""

    mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    users: np.ndarray
    """[n_users, rank]"""
    items: np.ndarray
    """[n_items, rank]"""

    def predict(self, ratings: Interactions) -> np.ndarray:
        """Predicted ratings on ``ratings``' own scale, clipped to it as the exported models are."""
        u, i = ratings.users, ratings.items
        unit = self.mean + self.user_bias[u] + self.item_bias[i] + np.einsum("nk,nk->n", self.users[u], self.items[i])
        return ratings.scale.clipped_rating(unit)


def ridge_rows(rows: np.ndarray, n_rows: int, other: np.ndarray, target: np.ndarray,
               penalty: float, bias_penalty: float) -> np.ndarray:
    """For every row r, the exact minimiser [b_r, x_r] of ``sum over its ratings (target - b_r -
    <x_r, other>)² + n_r * (bias_penalty * b_r² + penalty * |x_r|²)`` (``other`` holds each
    rating's fixed factors). Rows without ratings get zeros."""
    width = other.shape[1] + 1
    order = np.argsort(rows, kind="stable")
    gram, moment = np.zeros((n_rows, width, width)), np.zeros((n_rows, width))
    chunk = max(1, OUTER_PRODUCT_VALUES // (width * width))
    for begin in range(0, len(rows), chunk):
        part = order[begin:begin + chunk]
        present, starts = np.unique(rows[part], return_index=True)
        design = np.concatenate([np.ones((len(part), 1)), other[part]], axis=1)
        outer = (design[:, :, None] * design[:, None, :]).reshape(len(part), -1)
        gram[present] += np.add.reduceat(outer, starts).reshape(-1, width, width)
        moment[present] += np.add.reduceat(design * target[part, None], starts)
    diagonal = np.full(width, float(penalty))
    diagonal[0] = bias_penalty
    counts = np.bincount(rows, minlength=n_rows)
    ridge = counts[:, None] * diagonal
    ridge[counts == 0] = 1.0   # no ratings: the identity, solved to zeros
    gram[:, np.arange(width), np.arange(width)] += ridge
    return np.linalg.solve(gram, moment[:, :, None])[:, :, 0]


def fit_als(train: Interactions, n_users: int, n_items: int, rank: int, penalty: float,
            bias_penalty: float = 0.0, sweeps: int = 25, seed: int = 0) -> BiasedFactors:
    """Biased MF of ``rank`` fitted to ``train`` by ``sweeps`` alternating exact half-steps."""
    rng = np.random.default_rng(seed)
    unit = train.unit.astype(np.float64)
    mean = float(unit.mean())
    residual = unit - mean
    items = rng.normal(0.0, 0.1, (n_items, rank))
    item_bias = np.zeros(n_items)
    for _ in range(sweeps):
        solved = ridge_rows(train.users, n_users, items[train.items], residual - item_bias[train.items], penalty,
                            bias_penalty)
        user_bias, users = solved[:, 0], solved[:, 1:]
        solved = ridge_rows(train.items, n_items, users[train.users], residual - user_bias[train.users], penalty,
                            bias_penalty)
        item_bias, items = solved[:, 0], solved[:, 1:]
    return BiasedFactors(mean, user_bias, item_bias, users, items)


def rmse(predicted: np.ndarray, ratings: Interactions) -> float:
    """RMSE on the ratings' own scale, as the trainer reports it (``rating_errors``)."""
    return rating_errors(predicted, ratings.ratings, ratings.scale)["rmse_stars"]


def bound_table(dataset: Dataset, ranks: list[int], penalties: list[float], sweeps: int) -> list[dict[str, Any]]:
    """One row per (rank, penalty): validation and test RMSE on the data's scale, and test / floor."""
    rows = []
    for rank in ranks:
        for penalty in penalties:
            started = time.perf_counter()
            fitted = fit_als(dataset.train, dataset.vocab.n_users, dataset.vocab.n_items, rank, penalty,
                             sweeps=sweeps)
            test = rmse(fitted.predict(dataset.test), dataset.test)
            rows.append({"rank": rank, "penalty": penalty,
                         "validation_rmse": rmse(fitted.predict(dataset.validation), dataset.validation),
                         "test_rmse": test, "test_over_floor": test / dataset.floor_rmse_stars,
                         "seconds": time.perf_counter() - started})
            print(_row_text(rows[-1]), flush=True)
    return rows


def _row_text(row: dict[str, Any]) -> str:
    return (f"{row['rank']:>5d} {row['penalty']:>9.4g} {row['validation_rmse']:>10.4f} {row['test_rmse']:>10.4f} "
            f"{row['test_over_floor']:>8.3f} {row['seconds']:>6.0f}")


def best_by_validation(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each rank's row with the lowest validation RMSE: the penalty a validation split would choose."""
    best: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["rank"] not in best or row["validation_rmse"] < best[row["rank"]]["validation_rmse"]:
            best[row["rank"]] = row
    return best


def number_list(kind: type) -> Callable[[str], list]:
    """An argparse type: comma-separated positive numbers of ``kind``."""
    def parse(text: str) -> list:
        try:
            values = [kind(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
        if not all(v > 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
        return values
    return parse


def run(args: argparse.Namespace) -> None:
    config = RunConfig(models=("mf",), seed=args.seed)
    dataset, _ = load_dataset(DataSource(synthetic=parse_shape(args.synthetic)), config,
                              np.random.default_rng(child_seed(config.seed, "split")))
    print(f"floor RMSE of the planted truth: {dataset.floor_rmse_stars:.4f}")
    print(f"{'rank':>5s} {'penalty':>9s} {'val RMSE':>10s} {'test RMSE':>10s} {'/ floor':>8s} {'s':>6s}")
    rows = bound_table(dataset, args.ranks, args.penalties, args.sweeps)
    print("each rank at the penalty its validation RMSE chooses:")
    for row in best_by_validation(rows).values():
        print(_row_text(row))
    result = {"synthetic": args.synthetic, "seed": args.seed, "sweeps": args.sweeps,
              "floor_rmse_stars": dataset.floor_rmse_stars, "rows": rows}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mf_bound", description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", default="ml-1m", metavar="SHAPE",
                        help="USERS,ITEMS,RATINGS or ml-1m, ml-20m, ml-25m (default: %(default)s)")
    parser.add_argument("--ranks", type=number_list(int), default="4,8", help="comma-separated ranks (default: %(default)s)")
    parser.add_argument("--penalties", type=number_list(float), default="0.00125,0.0025,0.005,0.0125,0.025",
                        help="comma-separated penalties, in embedding_decay's units (default: %(default)s)")
    parser.add_argument("--sweeps", type=int, default=25, help="alternating sweeps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=RunConfig().seed, help="the run's seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    if args.sweeps < 1:
        parser.error(f"--sweeps: expected a positive integer, got {args.sweeps}")
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
