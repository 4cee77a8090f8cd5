"""A finished run's checks and record: re-read table footers, and the run's manifest."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from contract.bundle_format import MANIFEST, PARITY_TOLERANCE
from contract.checksums import sha256_file
from contract.errors import VerificationError
from contract.parity import LOGIT_TOLERANCE_RULE
from contract.tables import RUN_SCHEMA_VERSION

from .bundle import Bundle
from .writer import table_file

if TYPE_CHECKING:
    from .runner import ScoringOptions



@dataclass
class ModelResult:
    """Figures of one model's pass over all users."""

    rows: dict[str, int] = field(default_factory=dict)
    parity_max_abs_diff: float | None = 0.0
    """Largest |onnxruntime - torch| of ``unit_rating`` at the reference pairs (None where Spark's
    tasks checked them, each against the tolerance)."""
    parity_logit_max_abs_diff: float | None = 0.0
    """The same for the ranking logits."""
    parity_pairs: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"onnxruntime": 0.0, "onnxruntime_pairs": 0.0,
                                                               "top_n": 0.0, "write": 0.0})


def expected_rows(bundle: Bundle, table: str, top_n: int) -> int:
    """Rows a complete table partition must hold for one model."""
    if table == "predictions":
        return bundle.n_users * bundle.n_items
    unseen = bundle.n_items - np.diff(bundle.seen_indptr)
    return int(np.minimum(unseen, top_n).sum())


def verify_tables(run_dir: Path, bundle: Bundle, tables: tuple[str, ...], top_n: int) -> dict[str, dict[str, int]]:
    """Re-read every written file's footer: column names and types, and each model's row count
    over its part files, must be what the run promised."""
    counts: dict[str, dict[str, int]] = {}
    for table in tables:
        counts[table] = {}
        want_columns = [(f.name, f.type) for f in bundle.table_schema(table)]
        for model in bundle.models:
            folder = table_file(run_dir, table, model).parent
            parts = sorted(folder.glob("*.parquet"))
            if not parts:
                raise VerificationError(f"{folder}: no Parquet files were written")
            rows = 0
            for path in parts:
                columns = [(f.name, f.type) for f in pq.read_schema(path)]
                if columns != want_columns:
                    raise VerificationError(f"{path}: columns {columns} differ from the {table} schema {want_columns}")
                rows += pq.read_metadata(path).num_rows
            want = expected_rows(bundle, table, top_n)
            if rows != want:
                raise VerificationError(f"{folder}: holds {rows} rows; expected {want}")
            counts[table][model] = rows
    return counts


def below_midpoint(run_dir: Path, bundle: Bundle, tables: tuple[str, ...]) -> dict[str, float | None]:
    """Per model, the share of recommended items whose predicted rating is below the scale's
    midpoint: a list that recommends what its own model says the user will dislike reads as a bug."""
    if "recommendations" not in tables:
        return {}
    shares: dict[str, float | None] = {}
    for model in bundle.models:
        folder = table_file(run_dir, "recommendations", model).parent
        predictions = ds.dataset(folder, format="parquet").to_table(columns=["prediction"]).column("prediction")
        shares[model] = (float(pc.mean(pc.less(predictions, bundle.scale.midpoint).cast(pa.float64())).as_py())
                         if len(predictions) else None)
    return shares


def run_manifest(run_id: str, created: datetime, digest: str, bundle: Bundle, options: "ScoringOptions",
                 results: dict[str, ModelResult], counts: dict[str, dict[str, int]], staging: Path,
                 seconds: dict[str, float], drift: dict[str, Any]) -> dict[str, Any]:
    """Everything a reader needs to know of the run, including each table file's SHA-256."""
    files = {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*.parquet"))}
    return {
        "run_schema_version": RUN_SCHEMA_VERSION,
        "run_id": run_id,
        "created_utc": created.isoformat(),
        "inputs_hash": digest,
        "bundle": {"path": str(bundle.path.resolve()), "bundle_id": bundle.bundle_id,
                   "manifest_sha256": sha256_file(bundle.path / MANIFEST)},
        "top_n": options.top_n,
        "models": bundle.models,
        "tables": list(options.tables),
        "n_users": bundle.n_users,
        "n_items": bundle.n_items,
        "rating_scale": bundle.scale.to_dict(),
        "row_counts": counts,
        "parity": {m: {"pairs": r.parity_pairs, "max_abs_diff": r.parity_max_abs_diff,
                       "logit_max_abs_diff": r.parity_logit_max_abs_diff, "tolerance": PARITY_TOLERANCE,
                       "logit_tolerance": LOGIT_TOLERANCE_RULE} for m, r in results.items()},
        "seconds": {**{k: round(v, 4) for k, v in seconds.items()},
                    **{m: {k: round(v, 4) for k, v in r.seconds.items()} for m, r in results.items()}},
        "threads": options.threads,
        "device": options.device,
        "engine": options.engine,
        "versions": {"onnxruntime": onnxruntime.__version__, "pyarrow": pa.__version__,
                     "numpy": np.__version__},
        "files": files,
        "model_versions": {m: bundle.model_version(m) for m in bundle.models},
        "drift": drift,
        "recommended_below_midpoint": below_midpoint(staging, bundle, options.tables),
        "ranking": "recommendations are ranked by the model's 'logit' output (that the user rates the item "
                   "at all); ties by smaller item_id",
    }
