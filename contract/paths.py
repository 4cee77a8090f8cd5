"""Default locations, relative to the working directory, shared by every command."""
from __future__ import annotations

from pathlib import Path

DEFAULT_DATA_DIR = Path("data")
"""Cache of downloaded data; ``data/ml-100k`` holds ``u.data`` and ``u.item``."""

DEFAULT_ARTIFACTS_ROOT = Path("artifacts")
"""Root of the versioned model bundles; ``artifacts/latest`` is the newest complete one."""

DEFAULT_OUTPUT_ROOT = Path("output")
"""Root of the published scoring runs; ``output/latest`` is the newest complete one."""

DEFAULT_EVALUATION = DEFAULT_OUTPUT_ROOT / "evaluation" / "evaluation.json"
"""Results of ``make evaluate``, which the report shows when present."""
