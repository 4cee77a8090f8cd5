"""The parity check shared by export and scoring: |onnxruntime - torch| within tolerance.

Ratings on the training scale [0, 1] must agree to ``PARITY_TOLERANCE``. Ranking logits are unbounded and
float32 rounding grows with their size, so theirs is ``PARITY_TOLERANCE * max(1, |torch logit|)``.
"""
from __future__ import annotations

import numpy as np

from .bundle_format import PARITY_TOLERANCE
from .errors import ParityError


LOGIT_TOLERANCE_RULE = f"{PARITY_TOLERANCE:g} * max(1, |torch logit|)"
"""How the ranking logits' tolerance is set, as manifests record it."""


def allowed_difference(expected: np.ndarray, logits: bool, tolerance: float = PARITY_TOLERANCE) -> np.ndarray:
    """Largest allowed |onnxruntime - torch| at each of ``expected``'s entries."""
    if not logits:
        return np.full(np.shape(expected), tolerance)
    return tolerance * np.maximum(1.0, np.abs(np.asarray(expected, np.float64)))


def check_parity(model: str, expected: np.ndarray, actual: np.ndarray, users_raw: np.ndarray,
                 items_raw: np.ndarray, context: str, logits: bool = False,
                 tolerance: float = PARITY_TOLERANCE) -> float:
    """Largest |actual - expected|; ParityError naming the worst pair (relative to what it may
    differ by) if any entry exceeds its allowance. ``logits``: ranking logits, see the module."""
    if expected.shape != actual.shape:
        raise ParityError(model, float("inf"), tolerance, (-1, -1), f"{context} (shape {actual.shape} "
                          f"!= {expected.shape})")
    if expected.size == 0:
        return 0.0
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    diff[np.isnan(diff)] = np.inf
    allowed = allowed_difference(expected, logits, tolerance)
    worst = int(np.argmax(diff / allowed))
    if diff[worst] > allowed[worst]:
        raise ParityError(model, float(diff[worst]), float(allowed[worst]),
                          (_plain(users_raw[worst]), _plain(items_raw[worst])), context)
    return float(diff.max())


def check_vector_parity(model: str, expected: np.ndarray, actual: np.ndarray, items_raw: np.ndarray,
                        context: str, tolerance: float = PARITY_TOLERANCE) -> float:
    """Largest |actual - expected| of unit-length item vectors [Q, D]; ParityError naming the item
    and the dimension of the worst entry beyond ``tolerance``."""
    if expected.shape != actual.shape:
        raise ParityError(model, float("inf"), tolerance, (-1, -1), f"{context} (shape {actual.shape} "
                          f"!= {expected.shape})", keys="(item_id, dimension)")
    if expected.size == 0:
        return 0.0
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    diff[np.isnan(diff)] = np.inf
    row, column = np.unravel_index(int(np.argmax(diff)), diff.shape)
    if diff[row, column] > tolerance:
        raise ParityError(model, float(diff[row, column]), tolerance, (_plain(items_raw[row]), int(column)), context,
                          keys="(item_id, dimension)")
    return float(diff.max())


def _plain(value: object) -> object:
    """An id as the message prints it: numpy scalars as Python ones, text as text."""
    return value.item() if hasattr(value, "item") else value
