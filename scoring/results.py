"""What one model's passes report back to the engine: rows written, parity, seconds."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelResult:
    """Figures of one model's passes over all its users and items."""

    rows: dict[str, int] = field(default_factory=dict)
    """Rows written, by table."""
    parity: dict[str, float | None] = field(default_factory=dict)
    """Largest |onnxruntime - torch| at the bundle's reference points, by output:
    ``max_abs_diff`` (``unit_rating``), ``logit_max_abs_diff``, ``item_vector_max_abs_diff``;
    None where Spark's writer checked them in its tasks, each against the tolerance."""
    parity_pairs: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"onnxruntime": 0.0, "onnxruntime_pairs": 0.0,
                                                               "top_n": 0.0, "write": 0.0})

    def add(self, other: "ModelResult") -> None:
        """Fold in the figures of another span of the same model: rows and seconds summed,
        parity the worst."""
        for table, rows in other.rows.items():
            self.rows[table] = self.rows.get(table, 0) + rows
        for key, value in other.seconds.items():
            self.seconds[key] = self.seconds.get(key, 0.0) + value
        self.parity_pairs += other.parity_pairs
        for key, value in other.parity.items():
            mine = self.parity.get(key)
            self.parity[key] = value if mine is None or (value is not None and value > mine) else mine
