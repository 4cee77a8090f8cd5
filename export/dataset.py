"""Typed in-memory data: the id vocabulary, interactions in index space, and the split data set."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scoring.errors import DataError

from .ratings import MAX_RATING, MIN_RATING


def to_unit_scale(stars: np.ndarray) -> np.ndarray:
    """Map ratings in stars [1, 5] onto the training scale [0, 1]."""
    return ((np.asarray(stars, dtype=np.float32) - MIN_RATING) / (MAX_RATING - MIN_RATING)).astype(np.float32)


def to_stars(unit: np.ndarray) -> np.ndarray:
    """Map scores on the training scale back to stars (unclipped)."""
    return np.asarray(unit, dtype=np.float32) * (MAX_RATING - MIN_RATING) + MIN_RATING


@dataclass(frozen=True)
class Vocabulary:
    """Raw MovieLens ids (ascending) and their dense 0-based indices, the rows of every embedding."""

    user_ids: np.ndarray
    item_ids: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "Vocabulary":
        return cls(np.unique(frame["user_id"].to_numpy()).astype(np.int32),
                   np.unique(frame["item_id"].to_numpy()).astype(np.int32))

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    @staticmethod
    def _index(known: np.ndarray, raw: np.ndarray, what: str) -> np.ndarray:
        raw = np.asarray(raw)
        index = np.searchsorted(known, raw)
        clipped = np.minimum(index, len(known) - 1)
        unknown = known[clipped] != raw
        if unknown.any():
            raise DataError(f"{what} {raw[unknown][:5].tolist()} not in the training vocabulary")
        return index.astype(np.int64)

    def user_index(self, raw: np.ndarray) -> np.ndarray:
        """Dense indices of raw user ids; DataError for ids never seen in training."""
        return self._index(self.user_ids, raw, "user ids")

    def item_index(self, raw: np.ndarray) -> np.ndarray:
        """Dense indices of raw item ids; DataError for ids never seen in training."""
        return self._index(self.item_ids, raw, "item ids")

    def known(self, frame: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the frame's rows whose user and item are both in the vocabulary."""
        return (np.isin(frame["user_id"].to_numpy(), self.user_ids)
                & np.isin(frame["item_id"].to_numpy(), self.item_ids))


@dataclass(frozen=True)
class Interactions:
    """Ratings in index space: parallel arrays, one entry per rating."""

    users: np.ndarray
    """User indices, int64."""
    items: np.ndarray
    """Item indices, int64."""
    stars: np.ndarray
    """Ratings in stars, float32."""
    timestamps: np.ndarray
    """Unix seconds, int64."""

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, vocab: Vocabulary) -> "Interactions":
        return cls(vocab.user_index(frame["user_id"].to_numpy()),
                   vocab.item_index(frame["item_id"].to_numpy()),
                   frame["rating"].to_numpy().astype(np.float32),
                   frame["timestamp"].to_numpy().astype(np.int64))

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def unit(self) -> np.ndarray:
        """Ratings on the training scale [0, 1]."""
        return to_unit_scale(self.stars)

    def take(self, index: np.ndarray) -> "Interactions":
        return Interactions(self.users[index], self.items[index], self.stars[index], self.timestamps[index])

    def concat(self, other: "Interactions") -> "Interactions":
        return Interactions(*(np.concatenate([a, b]) for a, b in
                              zip((self.users, self.items, self.stars, self.timestamps),
                                  (other.users, other.items, other.stars, other.timestamps))))


@dataclass(frozen=True)
class Dataset:
    """Everything training and export need: vocabulary, splits and the scoring-time history."""

    vocab: Vocabulary
    train: Interactions
    validation: Interactions
    """Used for early stopping only."""
    test: Interactions
    """Held out for the reported metrics."""
    history: Interactions
    """What each user has rated at scoring time: the LSTM's input and the top-N exclusions."""
    item_titles: dict[int, str] = field(default_factory=dict)
    """Raw item id -> title, where an items file was available."""
    notes: dict[str, int] = field(default_factory=dict)
    """Counts worth reporting: ratings moved to train, cold-start test pairs dropped."""


def seen_csr(history: Interactions, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, items) of each user's distinct history items."""
    keys = np.unique(history.users * (history.items.max(initial=0) + 1) + history.items)
    width = history.items.max(initial=0) + 1
    users, items = np.divmod(keys, width)
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return indptr, items.astype(np.int64)
