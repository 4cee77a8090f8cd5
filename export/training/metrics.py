"""Rating-error metrics of a trained model on held-out ratings, as pure numpy functions."""
from __future__ import annotations

import numpy as np

from contract.scale import RatingScale

HISTOGRAM_BINS = 16
"""Bins of the predicted-rating histogram across the rating scale."""


def rating_errors(predicted: np.ndarray, truth: np.ndarray, scale: RatingScale) -> dict[str, float]:
    """RMSE and MAE on the rating scale (``rmse_stars``, ``mae_stars``) and RMSE on [0, 1]."""
    error = np.asarray(predicted, np.float64) - np.asarray(truth, np.float64)
    rmse = float(np.sqrt(np.mean(error ** 2))) if error.size else float("nan")
    return {
        "rmse_stars": rmse,
        "mae_stars": float(np.mean(np.abs(error))) if error.size else float("nan"),
        "rmse_unit": rmse / scale.span,
        "n": int(error.size),
    }


def prediction_histogram(predicted: np.ndarray, truth: np.ndarray, scale: RatingScale) -> dict[str, list]:
    """Counts of predicted ratings in ``HISTOGRAM_BINS`` bins over the scale, one row per distinct
    true rating: ``{"bins": edges, "truth": true values, "counts": rows}``."""
    edges = np.linspace(scale.low, scale.high, HISTOGRAM_BINS + 1)
    values = np.unique(truth)
    return {"bins": edges.tolist(), "truth": values.tolist(),
            "counts": [np.histogram(predicted[truth == v], edges)[0].tolist() for v in values]}
