"""What kind of feedback a run trains on: explicit ratings, or implicit interactions (clicks,
plays, purchases) with at most a weight, and the rule that turns weights into confidences."""
from __future__ import annotations

import numpy as np

from .scale import RatingScale

EXPLICIT = "explicit"
IMPLICIT = "implicit"
FEEDBACK_KINDS = (EXPLICIT, IMPLICIT)
"""The values of ``--feedback`` and of a bundle's and a run's ``feedback`` field."""

IMPLICIT_SCALE = RatingScale(0.0, 1.0)
"""An implicit run's scale: interactions hold their confidence on (0, 1]; the models' score, the
estimate that a user interacts with an item, is published on [0, 1]."""

SCORE_COLUMN = {EXPLICIT: "prediction", IMPLICIT: "score"}
"""The ``predictions`` table's value column for each kind of feedback."""


def confidence(weights: np.ndarray) -> np.ndarray:
    """Each interaction's confidence on (0, 1] from its summed weight ``w`` > 0: ``log(1 + w)``
    divided by the largest one in the file. Logarithmic, so that a pair played 1,000 times weighs
    about ten times one played once, not a thousand. In a file without a weight column each row
    weighs 1, so without repeated rows every pair gets confidence 1."""
    logs = np.log1p(np.asarray(weights, np.float64))
    return (logs / logs.max()).astype(np.float32) if len(logs) else logs.astype(np.float32)
