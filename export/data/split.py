"""Seeded splits of a ratings frame, and the rule that keeps validation and test warm.

Rule: a seeded random permutation of the ratings is cut into train / validation / test
(80 / 10 / 10 by default). A validation or test rating whose user or item has no rating in
train is then moved into train, so every user and item of the file is in the catalogue and
every held-out rating can be predicted. The number moved is logged and recorded.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def _warm(train: pd.DataFrame, held: pd.DataFrame) -> np.ndarray:
    return (held["user_id"].isin(train["user_id"]) & held["item_id"].isin(train["item_id"])).to_numpy()


def split_frame(frame: pd.DataFrame, rng: np.random.Generator,
                fractions: tuple[float, ...]) -> tuple[list[pd.DataFrame], int]:
    """Cut ``frame`` into ``len(fractions)`` random parts, the first being train.

    Returns the parts and the number of held-out rows moved into train to keep them warm.
    """
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    order = rng.permutation(len(frame))
    bounds = np.round(np.cumsum(fractions)[:-1] * len(frame)).astype(int)
    parts = [frame.iloc[np.sort(idx)] for idx in np.split(order, bounds)]
    train, held = parts[0], parts[1:]
    moved = 0
    # Moving a row into train can only make other rows warm, so one pass per part suffices.
    for k, part in enumerate(held):
        warm = _warm(train, part)
        moved += int((~warm).sum())
        train = pd.concat([train, part[~warm]])
        held[k] = part[warm]
    if moved:
        log.info("split: moved %d held-out ratings of users or items absent from train into train", moved)
    return [train.sort_index()] + held, moved
