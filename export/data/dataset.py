"""Typed in-memory data: the id vocabulary, interactions in index space, and the split data set."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from contract.errors import DataError
from contract.feedback import EXPLICIT, IMPLICIT
from contract.ids import fits_int32, index_of
from contract.scale import MOVIELENS_STARS, RatingScale


def typed_ids(ids: np.ndarray) -> np.ndarray:
    """Ids as the tables will hold them: int32 where every id fits, else int64, or text."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int32 if fits_int32(ids) else np.int64)
    return ids.astype(str)


@dataclass(frozen=True)
class Vocabulary:
    """Raw ids (ascending) and their dense 0-based indices, the rows of every embedding."""

    user_ids: np.ndarray
    item_ids: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "Vocabulary":
        return cls(typed_ids(np.unique(frame["user_id"].to_numpy())), typed_ids(np.unique(frame["item_id"].to_numpy())))

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    def user_index(self, raw: np.ndarray) -> np.ndarray:
        """Dense indices of raw user ids; DataError for ids never seen in training."""
        return index_of(self.user_ids, raw, DataError, "user ids of the training vocabulary")

    def item_index(self, raw: np.ndarray) -> np.ndarray:
        """Dense indices of raw item ids; DataError for ids never seen in training."""
        return index_of(self.item_ids, raw, DataError, "item ids of the training vocabulary")

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
    ratings: np.ndarray
    """Ratings on the data's scale, float32."""
    timestamps: np.ndarray
    """Unix seconds, int64."""
    scale: RatingScale = MOVIELENS_STARS
    """The scale ``ratings`` are on."""

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, vocab: Vocabulary, scale: RatingScale = MOVIELENS_STARS) -> "Interactions":
        return cls(vocab.user_index(frame["user_id"].to_numpy()),
                   vocab.item_index(frame["item_id"].to_numpy()),
                   frame["rating"].to_numpy().astype(np.float32),
                   frame["timestamp"].to_numpy().astype(np.int64), scale)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def unit(self) -> np.ndarray:
        """Ratings on the training scale [0, 1]."""
        return self.scale.to_unit(self.ratings).astype(np.float32)

    def take(self, index: np.ndarray) -> "Interactions":
        return Interactions(self.users[index], self.items[index], self.ratings[index], self.timestamps[index],
                            self.scale)

    def concat(self, other: "Interactions") -> "Interactions":
        return Interactions(*(np.concatenate([a, b]) for a, b in
                              zip((self.users, self.items, self.ratings, self.timestamps),
                                  (other.users, other.items, other.ratings, other.timestamps))), self.scale)


@dataclass(frozen=True)
class Dataset:
    """Everything training and export need: vocabulary, splits and the scoring-time history."""

    vocab: Vocabulary
    scale: RatingScale
    """The ratings' scale: predictions are mapped back to it and clipped to it."""
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
    ordered: bool = True
    """Whether each user's ratings have an order (a timestamp or an ``--order-by`` column); the
    families that read a user's ratings in order need one."""
    floor_rmse_stars: float | None = None
    """For synthetic data with a known answer: the RMSE of the planted truth on the test ratings,
    which no model can beat but by chance."""
    sources: tuple[str, ...] = ()
    """Where the ratings came from, for messages: the ratings file, or the training then the test file."""
    feedback: str = EXPLICIT
    """``explicit`` (ratings) or ``implicit`` (interactions, ``ratings`` holding each one's confidence
    on (0, 1]); see ``contract.feedback``."""

    @property
    def implicit(self) -> bool:
        return self.feedback == IMPLICIT

    @property
    def described(self) -> str:
        """The training data's name in messages."""
        return self.sources[0] if self.sources else "the ratings"

    @property
    def test_described(self) -> str:
        """The held-out data's name in messages: the test file, or the split ratings file."""
        return self.sources[-1] if self.sources else "the ratings"


def seen_csr(history: Interactions, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, items) of each user's distinct history items."""
    keys = np.unique(history.users * (history.items.max(initial=0) + 1) + history.items)
    width = history.items.max(initial=0) + 1
    users, items = np.divmod(keys, width)
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return indptr, items.astype(np.int64)
