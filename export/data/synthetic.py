"""Seeded synthetic ratings shaped like MovieLens with a known answer: popularity skew, biases,
low-rank taste, a drift along each user's timeline, ratings missing not at random, timestamps,
and the planted truth beside them.

Used by the tests (a small catalogue whose structure a model must find) and by the benchmark
(catalogues the size of MovieLens 1M, 20M and 25M).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from contract.errors import UsageError
from contract.scale import MOVIELENS_STARS

FIRST_TIMESTAMP = 874_724_710
"""MovieLens 100K's earliest timestamp; synthetic timelines start there."""

SHAPES: dict[str, tuple[int, int, int]] = {
    "ml-100k": (943, 1_682, 100_000),
    "ml-1m": (6_040, 3_706, 1_000_209),
    "ml-20m": (138_493, 26_744, 20_000_263),
    "ml-25m": (162_541, 59_047, 25_000_095),
}
"""Users, items and ratings of the MovieLens releases, by name."""


def parse_shape(text: str) -> tuple[int, int, int]:
    """``USERS,ITEMS,RATINGS`` or a name from SHAPES, validated."""
    if text in SHAPES:
        return SHAPES[text]
    try:
        users, items, ratings = (int(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--synthetic: expected USERS,ITEMS,RATINGS or one of {sorted(SHAPES)}, "
                         f"got {text!r}") from None
    if min(users, items) < 2 or ratings < max(users, items) or ratings > users * items:
        raise UsageError(f"--synthetic: need at least 2 users and items and max(users, items) <= "
                         f"ratings <= users * items, got {text!r}")
    return users, items, ratings


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting: numpy's hash-based unique takes ~20x longer on tens of millions of keys."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


NOISE_SD = 0.5
"""Standard deviation of the Gaussian noise added to every planted rating before it is rounded."""
CENTRE, TASTE_SD, BIAS_SD = 3.25, 0.7, 0.3
"""The planted rating's centre, the spread of its low-rank taste term and of each of the user and
item biases, in stars. Chosen so that planted ratings seldom pass the ends of the scale, where the
expected rounded and clipped rating bends away from the planted one: the models are linear in
the planted terms, and a catalogue that saturates often would hold them above the floor whatever
their training (the best linear fit scores 1.075x the floor at centre 3.5, taste 1.1, biases 0.4;
1.004x here, with ``SELECTION_SLOPE``)."""
TREND_SD = 0.2
"""Spread of each user's drift over their own history: a user's ratings rise or fall by about this
much from their first rating to their last, which only a model reading the order can follow.
Small enough that a model blind to order loses little to it (the drift's variance, TREND_SD² / 12,
is about 1% of the floor's squared error)."""


SELECTION_SLOPE = 2.0
"""How much a user's planted taste for an item raises the chance that they rate it: a drawn pair
is kept with probability ``sigmoid(SELECTION_SLOPE * taste)``, taste having unit variance. Real
catalogues are missing not at random: people rate what they chose to watch or buy, so which items
a user rated says something about their taste, and the observed ratings lean high (MovieLens
100K's mean is 3.53 stars on a 1-5 scale). At 2 the observed mean is about 3.58 stars; drawn by
popularity alone (0) it is 3.25 and which items a user rated carries no taste at all."""


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Φ(x), from erf by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def expected_stars(mean: np.ndarray, sd: float = NOISE_SD) -> np.ndarray:
    """E[clip(round(mean + N(0, sd)), 1, 5)]: the best any model can predict of a planted rating
    (the planted truth), whose squared error on observed ratings is the floor."""
    low, high = int(MOVIELENS_STARS.low), int(MOVIELENS_STARS.high)
    expected = np.full(mean.shape, float(low))
    for star in range(low + 1, high + 1):   # E[X] = low + sum over s > low of P(X >= s)
        expected += 1.0 - _normal_cdf((star - 0.5 - mean) / sd)
    return expected


def generate_ratings(n_users: int, n_items: int, n_ratings: int, seed: int, rank: int = 4,
                     with_truth: bool = False) -> pd.DataFrame:
    """A ratings frame (``user_id``, ``item_id``, ``rating``, ``timestamp``, and with ``with_truth``
    ``expected``, the planted truth): every user and item rated at least once.

    Planted: a global mean, user and item biases, low-rank taste, and a per-user drift along the
    user's own timeline (the order effect); then Gaussian noise of ``NOISE_SD``, rounded to whole
    stars and clipped. ``expected`` is what a perfect model would predict (``expected_stars``).
    Which pairs are rated follows user activity, item popularity and taste (``SELECTION_SLOPE``)."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity = rng.permutation(popularity / popularity.sum())
    activity = rng.lognormal(0.0, 1.0, n_users)
    activity /= activity.sum()
    user_factors = rng.normal(0, 1, (n_users, rank))
    item_factors = rng.normal(0, 1, (n_items, rank))
    # One rating per user and per item first, then pairs drawn by activity and popularity and kept
    # by taste, deduplicated.
    users = [np.arange(n_users), rng.integers(0, n_users, n_items)]
    items = [rng.choice(n_items, n_users, p=popularity), np.arange(n_items)]
    keys = _sorted_unique(np.concatenate([users[k].astype(np.int64) * n_items + items[k] for k in (0, 1)]))
    kept_share = 0.5   # the mean of sigmoid(slope * taste) for any slope: taste is symmetric about 0
    while len(keys) < n_ratings:
        need = int((n_ratings - len(keys)) * 1.2 / kept_share) + 16
        u, i = rng.choice(n_users, need, p=activity), rng.choice(n_items, need, p=popularity)
        kept = rng.random(need) * (1.0 + np.exp(-SELECTION_SLOPE * _taste(user_factors, item_factors, u, i))) < 1.0
        drawn = u[kept].astype(np.int64) * n_items + i[kept]
        fresh = np.setdiff1d(_sorted_unique(drawn), keys, assume_unique=True)
        keys = np.sort(np.concatenate([keys, rng.permutation(fresh)[:n_ratings - len(keys)]]))
        if need > 100 * n_ratings:  # pragma: no cover - guarded by parse_shape's density check
            break
    u, i = np.divmod(keys, n_items)
    taste = _taste(user_factors, item_factors, u, i)
    timestamps = FIRST_TIMESTAMP + rng.integers(0, 200 * 86_400, len(u))
    mean = CENTRE + TASTE_SD * taste + rng.normal(0, BIAS_SD, n_users)[u] + rng.normal(0, BIAS_SD, n_items)[i]
    mean += rng.normal(0, TREND_SD, n_users)[u] * (_timeline_position(u, timestamps, n_users) - 0.5)
    stars = np.clip(np.rint(mean + rng.normal(0, NOISE_SD, len(u))), MOVIELENS_STARS.low,
                    MOVIELENS_STARS.high).astype(np.int8)
    frame = pd.DataFrame({"user_id": (u + 1).astype(np.int32), "item_id": (i + 1).astype(np.int32),
                          "rating": stars, "timestamp": timestamps.astype(np.int64)})
    if with_truth:
        frame["expected"] = expected_stars(mean).astype(np.float32)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def as_interactions(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Synthetic ratings as implicit feedback: every rated pair one interaction, with a ``weight``
    (plays) of ``1 + Poisson(2 ** (expected - 1))`` from its planted rating (``expected``, or the
    rating without truth), so that the pairs a user likes more are played more, and no rating."""
    rng = np.random.default_rng(seed)
    planted = frame["expected"] if "expected" in frame.columns else frame["rating"]
    plays = 1 + rng.poisson(2.0 ** (planted.to_numpy(np.float64) - 1.0))
    return frame.drop(columns=[c for c in ("rating", "expected") if c in frame.columns]).assign(
        weight=plays.astype(np.float32))


TASTE_CHUNK = 1 << 22
"""Pairs whose taste is computed at once: bounds the gathered factor rows at large shapes."""


def _taste(user_factors: np.ndarray, item_factors: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The planted taste of each (user, item) pair, of unit variance: ``<p_u, q_i> / sqrt(rank)``."""
    taste = np.empty(len(users))
    for start in range(0, len(users), TASTE_CHUNK):
        part = slice(start, start + TASTE_CHUNK)
        taste[part] = np.einsum("nk,nk->n", user_factors[users[part]], item_factors[items[part]])
    return taste / np.sqrt(user_factors.shape[1])


def _timeline_position(users: np.ndarray, timestamps: np.ndarray, n_users: int) -> np.ndarray:
    """Each rating's place in its user's own history by time, from 0 (first) to 1 (last)."""
    order = np.lexsort((timestamps, users))
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(users), np.float64)
    rank[order] = np.arange(len(users)) - starts[users[order]]
    return rank / np.maximum(counts[users] - 1, 1)


def write_u_data(frame: pd.DataFrame, path: Path) -> Path:
    """Write a ratings frame as a tab-separated ``u.data`` file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[["user_id", "item_id", "rating", "timestamp"]].to_csv(path, sep="\t", header=False, index=False)
    return path


def planted_blocks(n_users: int, n_items: int, n_blocks: int, seed: int, own_share: float = 0.6,
                   other_share: float = 0.15, noise: float = 0.3) -> tuple[pd.DataFrame, "PlantedBlocks"]:
    """Ratings with a known answer: users and items fall into ``n_blocks`` taste blocks; a user
    rates ``own_share`` of their own block's items (planted rating 4.5) and ``other_share`` of the
    others (1.5), plus Gaussian noise of standard deviation ``noise``, clipped to 1-5 stars.
    The right top-N for every user is drawn from their own block, and no model can rate held-out
    ratings better than the planted truth (``PlantedBlocks.rmse``)."""
    rng = np.random.default_rng(seed)
    truth = PlantedBlocks(np.arange(n_users) % n_blocks, np.arange(n_items) % n_blocks)
    same = truth.user_block[:, None] == truth.item_block[None, :]
    rated = rng.random((n_users, n_items)) < np.where(same, own_share, other_share)
    u, i = np.nonzero(rated)
    ratings = np.clip(truth.rating(u, i) + rng.normal(0, noise, len(u)), MOVIELENS_STARS.low, MOVIELENS_STARS.high)
    frame = pd.DataFrame({"user_id": (u + 1).astype(np.int32), "item_id": (i + 1).astype(np.int32),
                          "rating": ratings.astype(np.float32),
                          "timestamp": FIRST_TIMESTAMP + rng.integers(0, 86_400 * 30, len(u))})
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True), truth


class PlantedBlocks:
    """The truth behind ``planted_blocks``: each user's and item's block, and the planted rating."""

    OWN, OTHER = 4.5, 1.5

    def __init__(self, user_block: np.ndarray, item_block: np.ndarray) -> None:
        self.user_block, self.item_block = user_block, item_block

    def rating(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Planted rating of 0-based (user, item) positions."""
        return np.where(self.user_block[users] == self.item_block[items], self.OWN, self.OTHER)

    def rmse(self, user_ids: np.ndarray, item_ids: np.ndarray, ratings: np.ndarray) -> float:
        """RMSE of the planted truth on ratings given by raw (1-based) ids: the floor for any model."""
        return float(np.sqrt(np.mean((self.rating(user_ids - 1, item_ids - 1) - ratings) ** 2)))
