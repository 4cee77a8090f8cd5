"""Rating baselines: the global mean, user + item biases, and the peer library Surprise."""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from contract.scale import RatingScale
from export.data.dataset import Interactions

log = logging.getLogger(__name__)

SURPRISE_ALGORITHMS = ("SVD", "SVDpp", "BaselineOnly")


def global_mean_predictions(train: Interactions, test: Interactions) -> np.ndarray:
    return np.full(len(test), train.ratings.mean(), np.float32)


def bias_predictions(train: Interactions, test: Interactions, n_users: int, n_items: int,
                     reg_user: float = 15.0, reg_item: float = 10.0, iterations: int = 10) -> np.ndarray:
    """``mean + b_u + b_i`` fitted by alternating regularised least squares (as Surprise's
    BaselineOnly with ALS), clipped to the rating scale."""
    mean = train.ratings.mean()
    user_bias, item_bias = np.zeros(n_users), np.zeros(n_items)
    n_u = np.bincount(train.users, minlength=n_users)
    n_i = np.bincount(train.items, minlength=n_items)
    for _ in range(iterations):
        residual = train.ratings - mean - user_bias[train.users]
        item_bias = np.bincount(train.items, residual, n_items) / (reg_item + n_i)
        residual = train.ratings - mean - item_bias[train.items]
        user_bias = np.bincount(train.users, residual, n_users) / (reg_user + n_u)
    return np.clip(mean + user_bias[test.users] + item_bias[test.items], train.scale.low, train.scale.high).astype(np.float32)


def surprise_available() -> bool:
    try:
        import surprise  # noqa: F401
    except ImportError:
        return False
    return True


def surprise_predictions(algorithm: str, train: pd.DataFrame, test: pd.DataFrame, seed: int,
                         scale: RatingScale) -> np.ndarray:
    """Fit one Surprise algorithm with its default settings on ``train`` and predict ``test``."""
    import surprise

    factories: dict[str, Callable[[], object]] = {
        "SVD": lambda: surprise.SVD(random_state=seed),
        "SVDpp": lambda: surprise.SVDpp(random_state=seed, cache_ratings=True),
        "BaselineOnly": lambda: surprise.BaselineOnly(verbose=False),
    }
    reader = surprise.Reader(rating_scale=(scale.low, scale.high))
    data = surprise.Dataset.load_from_df(train[["user_id", "item_id", "rating"]], reader)
    model = factories[algorithm]()
    model.fit(data.build_full_trainset())
    return np.array([model.predict(u, i).est for u, i in zip(test["user_id"], test["item_id"])], np.float32)
