"""The inputs a graph asks for, built from user (and item) indices and the users' context.

Every graph input is named after a feed of ``contract.bundle_format.FEEDS``; this module is the
one place that turns a name into an array, for the scoring job and for export's parity checks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.bundle_format import pair_windows


@dataclass(frozen=True)
class UserContext:
    """Each user's latest rated items and their ratings on [0, 1], oldest first, left-padded
    with the padding index (``n_items``) and rating 0: what sequence models read."""

    latest_items: np.ndarray
    """int64 [n_users, L]."""
    latest_ratings: np.ndarray
    """float32 [n_users, L]."""

    @property
    def length(self) -> int:
        return int(self.latest_items.shape[1])

    def last(self, length: int) -> "UserContext":
        """The latest ``length`` columns (``length`` <= ``self.length``)."""
        if length > self.length:
            raise ValueError(f"a context of {length} items was asked of one that holds {self.length}")
        start = self.length - length
        return UserContext(self.latest_items[:, start:], self.latest_ratings[:, start:])


def build_feeds(names: tuple[str, ...], users: np.ndarray, items: np.ndarray | None,
                context: UserContext) -> dict[str, np.ndarray]:
    """Arrays for the graph inputs ``names``, rows given by ``users`` (and ``items`` for pairwise
    graphs); ``context`` cut to the model's context length already."""
    users = np.asarray(users, dtype=np.int64)
    feeds: dict[str, np.ndarray] = {}
    for name in names:
        if name == "user":
            feeds[name] = users
        elif name == "item":
            feeds[name] = np.asarray(items, dtype=np.int64)
        elif name == "history_items":
            feeds[name] = context.latest_items[users]
        elif name == "history_ratings":
            feeds[name] = context.latest_ratings[users]
        elif name in ("window_items", "window_ratings"):
            windows = pair_windows(context.latest_items, context.latest_ratings, users,
                                   np.asarray(items, dtype=np.int64))
            feeds[name] = windows[0] if name == "window_items" else windows[1]
        else:
            raise KeyError(f"no feed is named {name!r}")
    return feeds
