"""The parity check shared by export and scoring: largest |onnxruntime - torch| on [0, 1]."""
from __future__ import annotations

import numpy as np

from .bundle import PARITY_TOLERANCE
from .errors import ParityError


def check_parity(model: str, expected: np.ndarray, actual: np.ndarray, users_raw: np.ndarray,
                 items_raw: np.ndarray, context: str, tolerance: float = PARITY_TOLERANCE) -> float:
    """Largest |actual - expected|; ParityError naming the worst pair if it exceeds ``tolerance``."""
    if expected.shape != actual.shape:
        raise ParityError(model, float("inf"), tolerance, (-1, -1), f"{context} (shape {actual.shape} "
                          f"!= {expected.shape})")
    if expected.size == 0:
        return 0.0
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    diff[np.isnan(diff)] = np.inf
    worst = int(np.argmax(diff))
    if diff[worst] > tolerance:
        raise ParityError(model, float(diff[worst]), tolerance,
                          (int(users_raw[worst]), int(items_raw[worst])), context)
    return float(diff[worst])
