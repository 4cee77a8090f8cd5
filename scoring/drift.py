"""Run-to-run report: how a scoring run's tables differ from those of the run it replaces.

Per model, against the previous ``latest`` run, on what both runs hold (inner joins on ids of
one type): the share of the users in both runs whose top-N list (items and order) changed, the
mean and largest absolute change of predictions over the pairs both runs hold (for a seeded
sample of ``SAMPLE_USERS`` users, all of them when fewer), and the share of the catalogue that
appears in any top-N list, now and before. Each comparison also says how much of the new run it
covers: where less than ``MIN_COMPARABLE_SHARE`` of the new run's users or pairs are in the
previous run (a new data set, ids of another type) the figures stand for little, the model is
marked not comparable, and a threshold set on it refuses the run instead of passing it. A figure
with nothing to measure is None, with the reason beside it. With the same bundle and settings
every change is zero: scoring is deterministic.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from contract.errors import GateRefused

from .writer import table_file

log = logging.getLogger(__name__)

SAMPLE_USERS = 2_000
"""Most users whose predictions are compared; reading every prediction of two runs would cost as
much as writing them."""
MIN_COMPARABLE_SHARE = 0.5
"""Smallest share of the new run's users (top-N lists) and sampled pairs (predictions) that the
previous run must hold too for a model's figures to count as a comparison of the two runs."""
KEYS = ["user_id", "item_id"]


@dataclass(frozen=True)
class DriftLimits:
    """Thresholds beyond which a run is not published (None: no limit)."""

    max_topn_change: float | None = None
    """Largest share of users whose top-N list may change."""
    max_prediction_change: float | None = None
    """Largest mean absolute change of predictions (rating scale)."""


def _dataset(run: Path, table: str, model: str) -> ds.Dataset:
    return ds.dataset(table_file(run, table, model).parent, format="parquet")


def _table(dataset: ds.Dataset, columns: list[str], users: pa.Array | None = None) -> pa.Table:
    """``columns`` of the rows of ``users`` (all rows for None); integer ids of another width than
    the table's are matched by value."""
    if users is None:
        return dataset.to_table(columns=columns)
    kind = dataset.schema.field("user_id").type
    if users.type == kind or not pa.types.is_integer(kind):
        condition = pc.field("user_id").isin(users)
    else:
        condition = pc.field("user_id").cast(pa.int64()).isin(pc.cast(users, pa.int64()))
    return dataset.to_table(columns=columns, filter=condition)


def _kind(kind: pa.DataType) -> str:
    return "integer" if pa.types.is_integer(kind) else "text"


def _id_change(now: pa.Schema, before: pa.Schema) -> str | None:
    """Why ids of the two runs cannot be matched (their kinds differ), or None."""
    for key in KEYS:
        ours, theirs = _kind(now.field(key).type), _kind(before.field(key).type)
        if ours != theirs:
            return f"{key.removesuffix('_id')} ids are {ours} where the previous run's were {theirs}"
    return None


def _matched(table: pa.Table) -> pa.Table:
    """Integer ids widened to int64, so that int32 and int64 ids of two runs join."""
    for key in KEYS:
        if pa.types.is_integer(table.schema.field(key).type):
            table = table.set_column(table.schema.get_field_index(key), key, pc.cast(table.column(key), pa.int64()))
    return table


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
    same pairs in the same order (the same bundle, or the same vocabularies), else by an inner join."""
    if now.num_rows == before.num_rows and all(now.column(k).equals(before.column(k)) for k in KEYS):
        ours, theirs = now.column("prediction"), before.column("prediction")
    else:
        joined = _matched(now).join(_matched(before).rename_columns([*KEYS, "previous"]), KEYS, join_type="inner")
        ours, theirs = joined.column("prediction"), joined.column("previous")
    return np.abs(ours.to_numpy().astype(np.float64) - theirs.to_numpy().astype(np.float64))


def _topn_figures(now: pa.Table, before: pa.Table, n_items: int, previous_n_items: int) -> dict[str, Any]:
    ours, theirs = _lists(_matched(now)), _lists(_matched(before))
    shared = ours.keys() & theirs.keys()
    return {"users_compared": len(shared),
            "users_comparable_share": len(shared) / len(ours) if ours else 0.0,
            "topn_changed_share": sum(ours[u] != theirs[u] for u in shared) / len(shared) if shared else None,
            "coverage": _coverage(now, n_items), "previous_coverage": _coverage(before, previous_n_items)}


def _prediction_figures(new: ds.Dataset, old: ds.Dataset, user_ids: pa.ChunkedArray) -> dict[str, Any]:
    everyone = pc.unique(user_ids)
    sample = _sample(everyone)
    users = sample if len(sample) < len(everyone) else None   # None: every user, no filter to evaluate
    now = _table(new, [*KEYS, "prediction"], users)
    before = _table(old, [*KEYS, "prediction"], users)
    change = _prediction_change(now, before)
    return {"pairs_compared": int(len(change)),
            "pairs_comparable_share": len(change) / now.num_rows if now.num_rows else 0.0,
            "prediction_mean_abs_change": float(change.mean()) if len(change) else None,
            "prediction_max_abs_change": float(change.max()) if len(change) else None}


def model_drift(new: Path, old: Path, model: str, tables: tuple[str, ...], n_items: int,
                previous_n_items: int) -> dict[str, Any]:
    """The figures of one model present in both runs; ``comparable`` False, with ``why``, where
    the runs share too little for the figures to mean anything."""
    figures: dict[str, Any] = {}
    shares = []
    user_ids = None   # the new run's users, from whichever table is read first
    for table in tables:
        new_set, old_set = _dataset(new, table, model), _dataset(old, table, model)
        if (change := _id_change(new_set.schema, old_set.schema)) is not None:
            return {"comparable": False, "comparable_share": 0.0, "why": change}
        if table == "recommendations":
            now = _table(new_set, ["user_id", "rank", "item_id"])
            figures.update(_topn_figures(now, _table(old_set, ["user_id", "rank", "item_id"]), n_items,
                                         previous_n_items))
            shares.append(figures["users_comparable_share"])
            user_ids = now.column("user_id")
        elif table == "predictions":
            if user_ids is None:
                user_ids = _table(new_set, ["user_id"]).column("user_id")
            figures.update(_prediction_figures(new_set, old_set, user_ids))
            shares.append(figures["pairs_comparable_share"])
    share = min(shares, default=0.0)
    figures.update(comparable=share >= MIN_COMPARABLE_SHARE, comparable_share=share)
    if not figures["comparable"]:
        figures["why"] = (f"only {share:.0%} of the new run's users or pairs are in the previous run (at least "
                          f"{MIN_COMPARABLE_SHARE:.0%} needed: a new catalogue?)" if tables
                          else "the previous run wrote none of this run's tables")
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
    figures = {}
    for model in (m for m in models if m in manifest.get("models", [])):
        try:
            figures[model] = model_drift(new, previous, model, shared_tables, n_items, manifest.get("n_items", 0))
        except (OSError, pa.ArrowException) as exc:
            figures[model] = {"comparable": False, "comparable_share": 0.0,
                              "why": f"the previous run's tables cannot be read ({str(exc).splitlines()[0][:200]})"}
    return {"previous_run": manifest.get("run_id", previous.name),
            "previous_bundle": manifest.get("bundle", {}).get("bundle_id"), "models": figures}


def log_drift(drift: dict[str, Any]) -> None:
    """One line per model: its figures, or why the runs cannot be compared."""
    if drift.get("why"):
        log.warning("against run %s: %s; no run-to-run figures", drift["previous_run"], drift["why"])
    for model, figures in drift["models"].items():
        if not figures["comparable"]:
            log.warning("%s against run %s: not comparable, %s", model, drift["previous_run"], figures["why"],
                        extra={"stage": "drift", "figures": figures})
            continue
        parts = [f"{figures['comparable_share']:.0%} of the run comparable"]
        if figures.get("topn_changed_share") is not None:
            parts.append(f"top-N changed for {100 * figures['topn_changed_share']:.2f}% of users")
        if figures.get("prediction_mean_abs_change") is not None:
            parts.append(f"predictions moved {figures['prediction_mean_abs_change']:.4g} on average")
        log.info("%s against run %s: %s", model, drift["previous_run"], ", ".join(parts),
                 extra={"stage": "drift", "figures": figures})


def check_limits(drift: dict[str, Any], limits: DriftLimits) -> None:
    """GateRefused (exit 3) naming the first model and figure over its limit, or the first model
    whose figure a limit is set on but which cannot be compared with the previous run."""
    checks = [(key, limit, option) for key, limit, option in
              (("topn_changed_share", limits.max_topn_change, "--max-topn-change"),
               ("prediction_mean_abs_change", limits.max_prediction_change, "--max-prediction-change"))
              if limit is not None]
    if not checks or drift.get("previous_run") is None:
        return
    if drift.get("why"):
        raise GateRefused(f"{checks[0][2]}: {drift['why']} (run {drift['previous_run']}), so the change cannot be "
                          "measured; nothing was published")
    for model, figures in drift["models"].items():
        for key, limit, option in checks:
            value = figures.get(key)
            if not figures["comparable"] or value is None:
                why = figures.get("why") or f"run {drift['previous_run']} has no table to measure it on"
                raise GateRefused(f"{option}: model '{model}' against run {drift['previous_run']}: {why}, so whether "
                                  f"it moved by more than {limit:g} cannot be told; nothing was published (score "
                                  f"once without {option} to accept the new catalogue)")
            if value > limit:
                raise GateRefused(f"{option}: model '{model}' {key.replace('_', ' ')} {value:.4g} against "
                                  f"run {drift['previous_run']} exceeds {limit:g}; nothing was published")
