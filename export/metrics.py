"""Rating-error metrics as pure numpy functions, and the seed post's figures to compare with."""
from __future__ import annotations

import numpy as np

from .dataset import to_stars
from .ratings import MAX_RATING, MIN_RATING

POST_RMSE_UNIT: dict[str, float] = {"mf": 0.66, "dense": 0.28, "lstm": 0.43}
"""Test RMSE on the [0, 1] scale reported by the introductory post, untuned."""


def clipped_stars(unit_scores: np.ndarray) -> np.ndarray:
    """Model scores on [0, 1] as the stars the tables publish (clipped to [1, 5])."""
    return np.clip(to_stars(unit_scores), MIN_RATING, MAX_RATING)


def rating_errors(predicted_stars: np.ndarray, true_stars: np.ndarray) -> dict[str, float]:
    """RMSE and MAE in stars and RMSE on the [0, 1] scale."""
    error = np.asarray(predicted_stars, np.float64) - np.asarray(true_stars, np.float64)
    rmse = float(np.sqrt(np.mean(error ** 2))) if error.size else float("nan")
    return {
        "rmse_stars": rmse,
        "mae_stars": float(np.mean(np.abs(error))) if error.size else float("nan"),
        "rmse_unit": rmse / (MAX_RATING - MIN_RATING),
        "n": int(error.size),
    }


PREDICTION_BINS = np.linspace(MIN_RATING, MAX_RATING, 17)
"""16 bins of a quarter star over [1, 5]."""


def prediction_histogram(predicted_stars: np.ndarray, true_stars: np.ndarray) -> list[list[int]]:
    """Counts of predicted stars per bin, one row for each true rating 1..5."""
    return [np.histogram(predicted_stars[true_stars == star], PREDICTION_BINS)[0].tolist()
            for star in range(MIN_RATING, MAX_RATING + 1)]
