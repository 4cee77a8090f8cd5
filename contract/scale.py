"""The rating scale: where a data set's ratings live, and the [0, 1] scale the models train on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

Values = TypeVar("Values")
"""A numpy array or a torch tensor: both have the arithmetic and ``clip`` used here."""


@dataclass(frozen=True)
class RatingScale:
    """Ratings from ``low`` to ``high``; the models train on ``(rating - low) / (high - low)``."""

    low: float
    """The lowest rating a user can give."""
    high: float
    """The highest rating a user can give."""

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"rating scale: expected low < high, got {self.low}, {self.high}")

    @property
    def span(self) -> float:
        return self.high - self.low

    @property
    def midpoint(self) -> float:
        """The middle of the scale: a predicted rating below it says the user will not like the item."""
        return (self.low + self.high) / 2

    def to_unit(self, ratings: Values) -> Values:
        """Ratings on the training scale [0, 1]."""
        return (ratings - self.low) / self.span

    def to_rating(self, unit: Values) -> Values:
        """Training-scale values back on the rating scale, unclipped."""
        return unit * self.span + self.low

    def clipped_rating(self, unit: Values) -> Values:
        """Training-scale values on the rating scale, clipped to it: what the tables publish."""
        return self.to_rating(unit).clip(self.low, self.high)

    def to_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high}


MOVIELENS_STARS = RatingScale(1.0, 5.0)
"""MovieLens 100K's scale: whole stars from 1 to 5."""
