"""Run-to-run report: how a scoring run's tables differ from those of the run it replaces.

Per model, against the previous ``latest`` run, on what both runs hold (ids of one type), each
table's own figures (``Table.drift``): the share of users whose top-N list changed and the
catalogue's coverage, the mean and largest change of predictions over a seeded sample of users,
the share of items whose similar-items list changed. Each comparison also says how much of the
new run it covers: where less than ``MIN_COMPARABLE_SHARE`` of the new run's users, items or
pairs are in the previous run (a new data set, ids of another type) the figures stand for
little, the model is marked not comparable, and a threshold set on it refuses the run instead
of passing it. A figure with nothing to measure is None, with the reason beside it. With the
same bundle and settings every change is zero: scoring is deterministic.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from contract.errors import GateRefused, StoreError
from contract.store import Location, Store, is_remote

from .bundle import Bundle
from .tables import DriftInputs, Table, chosen
from .writer import table_file

log = logging.getLogger(__name__)

MIN_COMPARABLE_SHARE = 0.5
"""Smallest share of the new run's users (top-N lists), items (similar items) and sampled pairs
(predictions) that the previous run must hold too for a model's figures to count as a comparison of the two runs."""


@dataclass(frozen=True)
class DriftLimits:
    """Thresholds beyond which a run is not published (None: no limit)."""

    max_topn_change: float | None = None
    """Largest share of users whose top-N list may change."""
    max_prediction_change: float | None = None
    """Largest mean absolute change of predictions (rating scale)."""


@dataclass(frozen=True)
class RunFiles:
    """A published run's files, in a local directory or on an object store."""

    fs: pafs.FileSystem
    path: str
    name: str

    @classmethod
    def at(cls, location: Location) -> "RunFiles":
        if is_remote(location):
            store = Store.open(str(location))
            return cls(store.fs, store.path, store.name)
        return cls(pafs.LocalFileSystem(), str(Path(location).resolve()), Path(location).name)

    def manifest(self) -> dict[str, Any]:
        with self.fs.open_input_stream(f"{self.path}/manifest.json") as stream:
            return json.loads(stream.read())

    def dataset(self, table: str, model: str) -> ds.Dataset:
        folder = table_file(Path("."), table, model).parent
        return ds.dataset(f"{self.path}/{folder.as_posix()}", format="parquet", filesystem=self.fs)


def _dataset(run: Path | RunFiles, table: str, model: str) -> ds.Dataset:
    if isinstance(run, RunFiles):
        return run.dataset(table, model)
    return ds.dataset(table_file(run, table, model).parent, format="parquet")


def _kind(kind: pa.DataType) -> str:
    return "integer" if pa.types.is_integer(kind) else "text"


def _id_change(table: Table, now: pa.Schema, before: pa.Schema) -> str | None:
    """Why ids of the two runs cannot be matched (their kinds differ), or None."""
    for column in table.id_columns:
        ours, theirs = _kind(now.field(column).type), _kind(before.field(column).type)
        if ours != theirs:
            return f"{table.id_columns[column]} ids are {ours} where the previous run's were {theirs}"
    return None


def model_drift(new: Path, old: Path | RunFiles, model: str, tables: tuple[str, ...], inputs: DriftInputs) -> dict[str, Any]:
    """The figures of one model present in both runs; ``comparable`` False, with ``why``, where
    the runs share too little for the figures to mean anything."""
    figures: dict[str, Any] = {}
    shares = []
    for table in chosen(tables) if tables else ():
        new_set, old_set = _dataset(new, table.name, model), _dataset(old, table.name, model)
        if (change := _id_change(table, new_set.schema, old_set.schema)) is not None:
            return {"comparable": False, "comparable_share": 0.0, "why": change}
        table_figures, share = table.drift(new_set, old_set, inputs)
        figures.update(table_figures)
        shares.append(share)
    share = min(shares, default=0.0)
    figures.update(comparable=share >= MIN_COMPARABLE_SHARE, comparable_share=share)
    if not figures["comparable"]:
        figures["why"] = (f"only {share:.0%} of the new run's users, items or pairs are in the previous run (at "
                          f"least {MIN_COMPARABLE_SHARE:.0%} needed: a new catalogue?)" if tables
                          else "the previous run wrote none of this run's tables")
    return figures


def run_drift(new: Path, location: Location | None, bundle: Bundle, tables: tuple[str, ...]) -> dict[str, Any]:
    """Figures of every model also in the run at ``location`` (the one ``latest`` pointed at), or why none."""
    if location is None:
        return {"previous_run": None, "models": {}}
    try:
        previous = RunFiles.at(location)
        manifest = previous.manifest()
    except (OSError, ValueError, StoreError):
        return {"previous_run": str(location).rsplit("/", 1)[-1], "models": {},
                "why": "the previous run has no readable manifest"}
    shared_tables = tuple(t for t in tables if t in manifest.get("tables", []))
    inputs = DriftInputs(bundle.n_items, manifest.get("n_items", 0), bundle.user_id_array)
    figures = {}
    for model in (m for m in bundle.models if m in manifest.get("models", [])):
        try:
            figures[model] = model_drift(new, previous, model, shared_tables, inputs)
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
        if figures.get("similar_changed_share") is not None:
            parts.append(f"similar items changed for {100 * figures['similar_changed_share']:.2f}% of items")
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
