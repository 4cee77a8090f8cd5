"""What a scoring run is asked to do: the options of ``python -m scoring``, as one value."""
from __future__ import annotations

from dataclasses import dataclass, field

from contract.machine import available_cpus
from contract.retention import DEFAULT_KEEP
from contract.store import Location

from .drift import DriftLimits
from .rules import ItemRules
from .settings import DEFAULT_SIMILAR_K, DEFAULT_TOP_N, PassSettings
from .spark_options import SparkOptions
from .tables import DEFAULT_TABLES, needs_ratings

DEFAULT_CHUNK_PAIRS = 16_384
"""User-item pairs per onnxruntime call for the all-items graphs: bounds their per-pair
intermediates ([B, H, n_items] for the dense net and the LSTM), which run fastest in pieces of
about this size (docs/performance.md)."""
RANKING_CHUNK_PAIRS = 4_194_304
"""User-item pairs per call for the ranking graphs of runs whose tables need no ratings: one
matrix product, which needs many users per call to run at speed; its [B, n_items] output is the
only per-pair tensor."""
ENGINES = ("local", "spark")
"""Where a run's pairs are scored: this process (``scoring.local_engine``) or Spark's Python
workers (``scoring.spark_engine``)."""


@dataclass(frozen=True)
class ScoringOptions:
    """What a scoring run reads, computes and writes."""

    bundle: Location
    """A bundle folder; on a store, an artifacts root (its ``_LATEST`` bundle) or one bundle."""
    output_root: Location
    """A local folder, or a folder on an object store (``contract.roots``)."""
    top_n: int = DEFAULT_TOP_N
    models: tuple[str, ...] | None = None
    """Models to score; None: every model in the bundle."""
    tables: tuple[str, ...] = DEFAULT_TABLES
    similar_k: int = DEFAULT_SIMILAR_K
    """Items per list of the ``similar_items`` table."""
    exclude_items: Location | None = None
    """Parquet or CSV of item ids never listed (``scoring.rules``)."""
    candidates: Location | None = None
    """Parquet or CSV of the only item ids that may be listed."""
    chunk_pairs: int | None = None
    """Pairs per onnxruntime call; None: ``RANKING_CHUNK_PAIRS`` where no table needs ratings, else
    ``DEFAULT_CHUNK_PAIRS``."""
    threads: int = field(default_factory=available_cpus)
    device: str = "cpu"
    wait: bool = False
    report: bool = True
    """Write report.html into the run (plots need matplotlib)."""
    engine: str = "local"
    """One of ``ENGINES``."""
    spark: SparkOptions = SparkOptions()
    keep: int = DEFAULT_KEEP
    """Published runs kept under the output root after this one (0: all)."""
    limits: DriftLimits = DriftLimits()

    @property
    def ranking_only(self) -> bool:
        """Whether no table reads every pair's rating, so the ranking graphs suffice."""
        return not needs_ratings(self.tables)

    @property
    def pairs_per_call(self) -> int:
        if self.chunk_pairs is not None:
            return self.chunk_pairs
        return RANKING_CHUNK_PAIRS if self.ranking_only else DEFAULT_CHUNK_PAIRS

    def settings(self, rules: ItemRules = ItemRules()) -> PassSettings:
        """What every pass of the run is told."""
        return PassSettings(self.top_n, self.pairs_per_call, self.similar_k, rules)
