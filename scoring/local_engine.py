"""``--engine local``: every model's passes in this process, one model after another.

An engine takes the loaded bundle, the run's options and pass settings, the staging folder and
the run id; it writes every chosen table of every model under ``staging/<table>/model=<m>/`` and
returns each model's ``ModelResult`` with a record of its own for the manifest (docs/extending.md).
It calls ``finished`` (when given) with each folder it will not write to again: a root on an
object store sends it while the engine goes on.
The runner then checks, records and publishes what it wrote, whichever engine it was.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from contract.failpoints import failpoint

from .bundle import Bundle
from .model_pass import open_outlets, score_span
from .options import ScoringOptions
from .results import ModelResult
from .sessions import ModelScorer
from .settings import PassSettings
from .tables import UNITS, chosen

log = logging.getLogger(__name__)


def score(bundle: Bundle, options: ScoringOptions, settings: PassSettings, staging: Path, run_id: str,
          finished: Callable[[Path], None] | None = None) -> tuple[dict[str, ModelResult], dict[str, Any]]:
    """Each model's tables, unit by unit (its users' pass, then its items' tables)."""
    tables = chosen(options.tables)
    results: dict[str, ModelResult] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="table-writer") as pool:
        for model in bundle.models:
            t = time.perf_counter()
            result = ModelResult()

            def scorer(model: str = model) -> ModelScorer:
                return ModelScorer.open(bundle.graphs(model), bundle.context, options.threads, options.device,
                                        options.ranking_only)

            for unit in UNITS:
                mine = tuple(table for table in tables if table.unit == unit)
                if mine:
                    outlets = open_outlets(staging, mine, bundle, model, run_id)
                    result.add(score_span(bundle, model, unit, outlets, settings, scorer, pool, options.threads,
                                          options.device))
                    if finished is not None:
                        for _, writer in outlets.values():
                            finished(writer.path.parent)
            failpoint("after_first_model")
            result.seconds["total"] = time.perf_counter() - t
            results[model] = result
            parity = ", ".join(f"{k} {v:.2e}" for k, v in result.parity.items() if v is not None)
            log.info("%s: %s rows, parity %s over %d pairs, %.2f s", model, result.rows, parity or "-",
                     result.parity_pairs, result.seconds["total"])
    return results, {}
