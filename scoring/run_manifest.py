"""A finished run's checks and record: re-read table footers, and the run's manifest."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pyarrow as pa
import pyarrow.parquet as pq

from contract.bundle_format import MANIFEST, PARITY_TOLERANCE
from contract.store import is_remote
from contract.checksums import sha256_file
from contract.errors import VerificationError
from contract.parity import LOGIT_TOLERANCE_RULE
from contract.tables import RUN_SCHEMA_VERSION

from .bundle import Bundle
from .bundle_fetch import bundle_uri
from .options import ScoringOptions
from .results import ModelResult
from .settings import PassSettings
from .tables import chosen
from .writer import table_file


def verify_tables(run_dir: Path, bundle: Bundle, tables: tuple[str, ...],
                  settings: PassSettings) -> dict[str, dict[str, int]]:
    """Re-read every written file's footer: column names and types, and each model's row count
    over its part files, must be what the run promised."""
    counts: dict[str, dict[str, int]] = {}
    for table in chosen(tables):
        counts[table.name] = {}
        want_columns = [(f.name, f.type) for f in table.schema(bundle)]
        want = table.expected_rows(bundle, settings)
        for model in bundle.models:
            folder = table_file(run_dir, table.name, model).parent
            parts = sorted(folder.glob("*.parquet"))
            if not parts:
                raise VerificationError(f"{folder}: no Parquet files were written")
            rows = 0
            for path in parts:
                columns = [(f.name, f.type) for f in pq.read_schema(path)]
                if columns != want_columns:
                    raise VerificationError(f"{path}: columns {columns} differ from the {table.name} schema "
                                            f"{want_columns}")
                rows += pq.read_metadata(path).num_rows
            if rows != want:
                raise VerificationError(f"{folder}: holds {rows} rows; expected {want}")
            counts[table.name][model] = rows
    return counts


def table_figures(run_dir: Path, bundle: Bundle, tables: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each table's own figures of each model's partition (``Table.run_figures``), where it has any."""
    figures: dict[str, dict[str, Any]] = {}
    for table in chosen(tables):
        per_model = {m: table.run_figures(run_dir, bundle, m) for m in bundle.models}
        if any(per_model.values()):
            figures[table.name] = per_model
    return figures


def run_manifest(run_id: str, created: datetime, digest: str, bundle: Bundle, options: ScoringOptions,
                 settings: PassSettings, results: dict[str, ModelResult], counts: dict[str, dict[str, int]],
                 staging: Path, seconds: dict[str, float], drift: dict[str, Any]) -> dict[str, Any]:
    """Everything a reader needs to know of the run, including each table file's SHA-256."""
    files = {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*.parquet"))}
    figures = table_figures(staging, bundle, options.tables)
    return {
        "run_schema_version": RUN_SCHEMA_VERSION,
        "run_id": run_id,
        "created_utc": created.isoformat(),
        "inputs_hash": digest,
        "bundle": {"path": str(bundle.path.resolve()), "bundle_id": bundle.bundle_id,
                   "manifest_sha256": sha256_file(bundle.path / MANIFEST),
                   **({"uri": bundle_uri(str(options.bundle), bundle.path)} if is_remote(options.bundle) else {})},
        "top_n": options.top_n,
        "similar_k": options.similar_k,
        "rules": settings.rules.record,
        "models": bundle.models,
        "tables": list(options.tables),
        "n_users": bundle.n_users,
        "n_items": bundle.n_items,
        "rating_scale": bundle.scale.to_dict(),
        "row_counts": counts,
        "parity": {m: {"pairs": r.parity_pairs, **r.parity, "tolerance": PARITY_TOLERANCE,
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
        "table_figures": figures,
        "feedback": bundle.feedback,
        "table_descriptions": {t.name: text for t in chosen(options.tables)
                               if (text := t.description(bundle)) is not None},
    }
