"""What every pass over a model's users or items is told: list lengths, batch size, rules."""
from __future__ import annotations

from dataclasses import dataclass, field

from .rules import ItemRules

DEFAULT_TOP_N = 10
"""Recommendations per user."""
DEFAULT_SIMILAR_K = 20
"""Similar items per item."""


@dataclass(frozen=True)
class PassSettings:
    """How a pass walks its users or items and what its lists hold; sent to Spark's tasks as is."""

    top_n: int = DEFAULT_TOP_N
    pairs_per_call: int = 16_384
    """User-item pairs per onnxruntime call of the users' pass."""
    similar_k: int = DEFAULT_SIMILAR_K
    rules: ItemRules = field(default_factory=ItemRules)
