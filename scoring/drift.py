"""Run-to-run report: how a scoring run's tables differ from those of the run it replaces.

Per model, against the previous ``latest`` run: the share of the users in both runs whose top-N
list (items and order) changed, the mean and largest absolute change of predictions over the
pairs both runs hold (for a seeded sample of ``SAMPLE_USERS`` users, all of them when fewer),
and the share of the catalogue that appears in any top-N list, now and before. With the same
bundle and settings every change is zero: scoring is deterministic.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from contract.errors import GateRefused

from .writer import table_file

SAMPLE_USERS = 2_000
"""Most users whose predictions are compared; reading every prediction of two runs would cost as
much as writing them."""


@dataclass(frozen=True)
class DriftLimits:
    """Thresholds beyond which a run is not published (None: no limit)."""

    max_topn_change: float | None = None
    """Largest share of users whose top-N list may change."""
    max_prediction_change: float | None = None
    """Largest mean absolute change of predictions (rating scale)."""


def _table(run: Path, table: str, model: str, columns: list[str], users: pa.Array | None = None) -> pa.Table:
    folder = table_file(run, table, model).parent
    dataset = ds.dataset(folder, format="parquet")
    condition = None if users is None else pc.field("user_id").isin(users)
    return dataset.to_table(columns=columns, filter=condition)


def _lists(table: pa.Table) -> dict[Any, tuple]:
    """Each user's top-N items in rank order."""
    order = pc.sort_indices(table, [("user_id", "ascending"), ("rank", "ascending")])
    table = table.take(order)
    users = table.column("user_id").to_pylist()
    items = table.column("item_id").to_pylist()
    lists: dict[Any, list] = {}
    for user, item in zip(users, items):
        lists.setdefault(user, []).append(item)
    return {u: tuple(v) for u, v in lists.items()}


def _coverage(table: pa.Table, n_items: int) -> float:
    return len(pc.unique(table.column("item_id"))) / n_items if n_items else 0.0


def _sample(users: pa.Array, seed: int = 0) -> pa.Array:
    if len(users) <= SAMPLE_USERS:
        return users
    picked = np.sort(np.random.default_rng(seed).choice(len(users), SAMPLE_USERS, replace=False))
    return users.take(pa.array(picked))


def _prediction_change(now: pa.Table, before: pa.Table) -> np.ndarray:
    """|now - before| over the (user, item) pairs both tables hold: row by row when they hold the
    same pairs in the same order (the same bundle, or the same vocabularies), else by a join."""
    keys = ["user_id", "item_id"]
    if now.num_rows == before.num_rows and all(now.column(k).equals(before.column(k)) for k in keys):
        ours, theirs = now.column("prediction"), before.column("prediction")
    else:
        joined = now.join(before.rename_columns(["user_id", "item_id", "previous"]), keys)
        ours, theirs = joined.column("prediction"), joined.column("previous")
    return np.abs(ours.to_numpy().astype(np.float64) - theirs.to_numpy().astype(np.float64))


def model_drift(new: Path, old: Path, model: str, tables: tuple[str, ...], n_items: int,
                previous_n_items: int) -> dict[str, Any]:
    """The figures of one model present in both runs."""
    figures: dict[str, Any] = {}
    user_ids = None   # the new run's users, from whichever table is read first
    if "recommendations" in tables:
        now = _table(new, "recommendations", model, ["user_id", "rank", "item_id"])
        before = _table(old, "recommendations", model, ["user_id", "rank", "item_id"])
        ours, theirs = _lists(now), _lists(before)
        shared = ours.keys() & theirs.keys()
        figures["users_compared"] = len(shared)
        figures["topn_changed_share"] = (sum(ours[u] != theirs[u] for u in shared) / len(shared)) if shared else 0.0
        figures["coverage"] = _coverage(now, n_items)
        figures["previous_coverage"] = _coverage(before, previous_n_items)
        user_ids = now.column("user_id")
    if "predictions" in tables:
        if user_ids is None:
            user_ids = _table(new, "predictions", model, ["user_id"]).column("user_id")
        everyone = pc.unique(user_ids)
        sample = _sample(everyone)
        users = sample if len(sample) < len(everyone) else None   # None: every user, no filter to evaluate
        now = _table(new, "predictions", model, ["user_id", "item_id", "prediction"], users)
        before = _table(old, "predictions", model, ["user_id", "item_id", "prediction"], users)
        change = _prediction_change(now, before)
        figures["pairs_compared"] = int(len(change))
        figures["prediction_mean_abs_change"] = float(change.mean()) if len(change) else 0.0
        figures["prediction_max_abs_change"] = float(change.max()) if len(change) else 0.0
    return figures


def run_drift(new: Path, previous: Path | None, models: list[str], tables: tuple[str, ...],
              n_items: int) -> dict[str, Any]:
    """Figures of every model also in ``previous`` (the run ``latest`` pointed at), or why none."""
    if previous is None:
        return {"previous_run": None, "models": {}}
    try:
        manifest = json.loads((previous / "manifest.json").read_text())
    except (OSError, ValueError):
        return {"previous_run": previous.name, "models": {}, "why": "the previous run has no readable manifest"}
    shared_tables = tuple(t for t in tables if t in manifest.get("tables", []))
    figures = {m: model_drift(new, previous, m, shared_tables, n_items, manifest.get("n_items", 0))
               for m in models if m in manifest.get("models", [])}
    return {"previous_run": manifest.get("run_id", previous.name),
            "previous_bundle": manifest.get("bundle", {}).get("bundle_id"), "models": figures}


def check_limits(drift: dict[str, Any], limits: DriftLimits) -> None:
    """GateRefused (exit 3) naming the first model and figure over its limit."""
    for model, figures in drift["models"].items():
        for key, limit, option in (("topn_changed_share", limits.max_topn_change, "--max-topn-change"),
                                   ("prediction_mean_abs_change", limits.max_prediction_change,
                                    "--max-prediction-change")):
            if limit is not None and figures.get(key, 0.0) > limit:
                raise GateRefused(f"{option}: model '{model}' {key.replace('_', ' ')} {figures[key]:.4g} against "
                                  f"run {drift['previous_run']} exceeds {limit:g}; nothing was published")
