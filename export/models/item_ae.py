"""The item autoencoder: a user's rated items, weighted by their ratings, through item x item
weights solved in closed form: EASE's ridge regression for the ranking, and for the rating the
biases plus a weighted average of the user's residuals from them over similar items.

It reads each user's latest ``history`` rated items and holds two ``n_items x n_items``
matrices, so its cost grows with the catalogue squared: it refuses catalogues larger than
``max_items`` (``Family.catalogue_limit``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from contract.errors import ConfigError

from ..data.dataset import Interactions
from ..training.closed_form import Neighbours, Ridge, fit_biases, ndcg_at, residual_rmse
from ..training.ranking_metric import RELEVANT_MIN
from ..training.config import TrainingConfig
from .base import Family
from .registry import register

log = logging.getLogger(__name__)

AVERAGE_FLOOR = 0.01
"""Added to the similarity mass a residual average divides by: a user with no similar rated item
gets the biases' rating."""

TIE_BREAK = 1e-5
"""Weight of each item's training popularity (its count over the largest count) in the ranking
logit: equal history scores, as for a user whose only ratings are at the scale's minimum, go to
the more popular item."""


@dataclass(frozen=True)
class ItemAEConfig:
    """The item autoencoder. Each penalty is a grid, chosen on the validation ratings."""

    history: int = 500
    """Latest rated items per user the model reads (the scoring job's context)."""
    rank_l2: tuple[float, ...] = (25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)
    """Penalties of the ranking weights; the one with the best validation NDCG@10 is kept."""
    rating_shrink: tuple[float, ...] = (3.0, 10.0, 30.0, 100.0)
    """Shrinkages of the rating's item similarities (``s * common / (common + shrink)``, ``common``
    the users who rated both); the one with the best validation RMSE is kept."""
    bias_l2: float = 5.0
    """Pseudo-ratings each user and item bias is shrunk by."""
    relevant_min: float = RELEVANT_MIN
    """Validation ratings on [0, 1] at or above this count as relevant when ``rank_l2`` is chosen
    (4 stars on 1-5, as ``make evaluate``)."""
    max_items: int = 5_000
    """Largest catalogue accepted: two float32 ``n_items^2`` matrices (200 MB at 5,000 items), an
    eigendecomposition of ``n_items^2`` per fit, and ``2 n_items^2`` multiply-adds per user scored
    (5.8 ms a user at 3,706 items on 2 cores)."""
    choices: dict[str, Any] = field(default_factory=dict)
    """What the fit chose, with each candidate's validation figure (written by the fit)."""
    implicit: bool = False
    """Implicit feedback: the rating output is the ranking head's own output, its reconstruction
    of the user's interactions (an estimate of whether the user interacts with the item); the
    biases and residual averages rate nothing there, every interaction being a positive."""
    training: TrainingConfig = TrainingConfig()
    """Its ``refit``: whether the validation ratings join the final solve (not "none")."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rank_l2", tuple(float(v) for v in self.rank_l2))
        object.__setattr__(self, "rating_shrink", tuple(float(v) for v in self.rating_shrink))
        if self.history < 1:
            raise ConfigError(f"item_ae history: expected a positive integer, got {self.history!r}")
        for name in ("rank_l2", "rating_shrink"):
            values = getattr(self, name)
            if not values or min(values) <= 0:
                raise ConfigError(f"item_ae {name}: expected one or more positive penalties, got {list(values)}")
        if self.bias_l2 < 0 or not 0 <= self.relevant_min <= 1 or self.max_items < 1:
            raise ConfigError(f"item_ae: expected bias_l2 >= 0, relevant_min in [0, 1] and max_items >= 1, got "
                              f"{self.bias_l2}, {self.relevant_min}, {self.max_items}")


class ItemAutoencoder(nn.Module):
    """``logit = sum_j r_uj A[j, i]`` and ``unit = mean + b_u + b_i + sum_j e_uj W[j, i] /
    (floor + sum_j |W[j, i]|)`` over the user's history ``j``, ``r_uj`` its ratings on [0, 1] and
    ``e_uj`` their residuals from the biases. Row ``n_items`` of ``A`` and ``W`` is the history's
    padding, all zero. With ``implicit`` the unit output is the logit plus ``b_u``, which is zero
    there and only keeps the user input of the graphs."""

    def __init__(self, n_users: int, n_items: int, implicit: bool = False) -> None:
        super().__init__()
        self.n_items = n_items
        self.implicit = implicit
        self.register_buffer("global_mean", torch.zeros(()))
        self.register_buffer("user_bias", torch.zeros(n_users))
        self.register_buffer("item_bias", torch.zeros(n_items + 1))
        self.register_buffer("rank_weights", torch.zeros(n_items + 1, n_items))
        self.register_buffer("rating_weights", torch.zeros(n_items + 1, n_items))
        self.register_buffer("rank_offset", torch.zeros(n_items))

    def residuals(self, users: torch.Tensor, history_items: torch.Tensor,
                  history_ratings: torch.Tensor) -> torch.Tensor:
        """``e_uj`` [B, L]: each history rating less its bias prediction, 0 where padded."""
        predicted = self.global_mean + self.user_bias[users][:, None] + self.item_bias[history_items]
        return torch.where(history_items < self.n_items, history_ratings - predicted, torch.zeros_like(predicted))

    def forward(self, users: torch.Tensor, items: torch.Tensor, history_items: torch.Tensor,
                history_ratings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One (user, item) pair per row -> unit rating [B] and ranking logit [B]."""
        if self.implicit:   # the user bias is zero: it keeps the graphs' user input
            logit = self.ranking_logit(users, items, history_items, history_ratings)
            return logit + self.user_bias[users], logit
        flat = history_items * self.n_items + items[:, None]                         # [B, L]
        weights = self.rating_weights.reshape(-1)[flat]
        rating = ((self.residuals(users, history_items, history_ratings) * weights).sum(-1)
                  / (AVERAGE_FLOOR + weights.abs().sum(-1)))
        unit = self.global_mean + self.user_bias[users] + self.item_bias[items] + rating
        return unit, self.ranking_logit(users, items, history_items, history_ratings)

    def ranking_logit(self, users: torch.Tensor, items: torch.Tensor, history_items: torch.Tensor,
                      history_ratings: torch.Tensor) -> torch.Tensor:
        """The ranking head alone: logit [B]."""
        flat = history_items * self.n_items + items[:, None]
        return (history_ratings * self.rank_weights.reshape(-1)[flat]).sum(-1) + self.rank_offset[items]


class AllItemsAE(nn.Module):
    """Every item at once: the history scattered into a row per user, times each weight matrix."""

    def __init__(self, model: ItemAutoencoder) -> None:
        super().__init__()
        self.model = model

    def _rows(self, history_items: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """[B, n_items + 1]: ``values`` summed at the history's items (the padding column last)."""
        rows = torch.zeros(history_items.shape[0], self.model.n_items + 1, dtype=values.dtype)
        return rows.scatter_add(1, history_items, values)

    def forward(self, users: torch.Tensor, history_items: torch.Tensor,
                history_ratings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        if m.implicit:
            logit = self.ranking(history_items, history_ratings)
            return logit + m.user_bias[users][:, None], logit
        residuals = self._rows(history_items, m.residuals(users, history_items, history_ratings))
        rated = self._rows(history_items, (history_items < m.n_items).to(history_ratings.dtype))
        average = (residuals @ m.rating_weights) / (AVERAGE_FLOOR + rated @ m.rating_weights.abs())
        unit = average + m.item_bias[:m.n_items] + m.user_bias[users][:, None] + m.global_mean
        return unit, self.ranking(history_items, history_ratings)

    def ranking(self, history_items: torch.Tensor, history_ratings: torch.Tensor) -> torch.Tensor:
        """The ranking head alone, which reads the history only: logit [B, n_items]."""
        m = self.model
        return self._rows(history_items, history_ratings) @ m.rank_weights + m.rank_offset


def solve(config: ItemAEConfig, ratings: Interactions, n_users: int, n_items: int) -> ItemAutoencoder:
    """The module for ``ratings`` with the config's first (chosen) penalties."""
    unit = ratings.unit.astype(np.float64)
    biases = fit_biases(ratings.users, ratings.items, unit, n_users, n_items, config.bias_l2)
    residuals = unit - biases.of(ratings.users, ratings.items)
    model = ItemAutoencoder(n_users, n_items, config.implicit)
    popularity = np.bincount(ratings.items, minlength=n_items).astype(np.float64)
    with torch.no_grad():
        model.global_mean.fill_(biases.mean)
        if not config.implicit:   # implicit: the rating output is the reconstruction alone
            model.user_bias.copy_(torch.as_tensor(biases.users))
        model.item_bias[:n_items] = torch.as_tensor(biases.items)
        model.rank_weights[:n_items] = Ridge.of(ratings.users, ratings.items, unit, n_users, n_items).weights(
            config.rank_l2[0])
        model.rating_weights[:n_items] = Neighbours.of(ratings.users, ratings.items, residuals, n_users,
                                                       n_items).weights(config.rating_shrink[0])
        model.rank_offset.copy_(torch.as_tensor(TIE_BREAK * popularity / max(popularity.max(), 1.0)))
    return model.eval()


def choose(config: ItemAEConfig, fit: Interactions, validation: Interactions, n_users: int,
           n_items: int) -> ItemAEConfig:
    """``config`` with the penalties that score best on ``validation`` fitted on ``fit`` first in
    their grids, and every candidate's figure in ``choices``. Without validation ratings (or
    relevant ones) the grid's middle value is kept."""
    started = time.perf_counter()
    unit = fit.unit.astype(np.float64)
    seen = (fit.users, fit.items)
    liked = validation.take(np.flatnonzero(validation.unit >= config.relevant_min))
    ranking = Ridge.of(fit.users, fit.items, unit, n_users, n_items)
    ndcg = {l2: ndcg_at(ranking, ranking.weights(l2), seen, (liked.users, liked.items), n_items)
            for l2 in config.rank_l2}
    biases = fit_biases(fit.users, fit.items, unit, n_users, n_items, config.bias_l2)
    residuals = unit - biases.of(fit.users, fit.items)
    neighbours = Neighbours.of(fit.users, fit.items, residuals, n_users, n_items)
    held = validation.unit.astype(np.float64) - biases.of(validation.users, validation.items)
    rmse = {shrink: residual_rmse(neighbours, neighbours.weights(shrink), AVERAGE_FLOOR, validation.users,
                                  validation.items, held) for shrink in config.rating_shrink}
    rank_l2 = _best(ndcg, config.rank_l2, larger_is_better=True)
    rating_shrink = _best(rmse, config.rating_shrink, larger_is_better=False)
    choices = {"rank_l2": rank_l2, "rating_shrink": rating_shrink,
               "validation_ndcg_at_10": {f"{k:g}": v for k, v in ndcg.items()},
               "validation_rmse_unit": {f"{k:g}": v for k, v in rmse.items()},
               "seconds": round(time.perf_counter() - started, 3)}
    log.info("item_ae: chose rank_l2 %g (validation NDCG@10 %.4f), rating_shrink %g (validation RMSE %.4f on "
             "[0, 1])", rank_l2, ndcg[rank_l2], rating_shrink, rmse[rating_shrink])
    return replace(config, rank_l2=(rank_l2, *[v for v in config.rank_l2 if v != rank_l2]),
                   rating_shrink=(rating_shrink, *[v for v in config.rating_shrink if v != rating_shrink]),
                   choices=choices)


def _best(figures: dict[float, float], grid: tuple[float, ...], larger_is_better: bool) -> float:
    finite = {k: v for k, v in figures.items() if np.isfinite(v)}
    if not finite:
        return sorted(grid)[len(grid) // 2]
    return max(finite, key=lambda k: finite[k] if larger_is_better else -finite[k])


class ItemAEFamily(Family):
    """The item autoencoder: reads each user's rated items, solved in closed form."""

    name = "item_ae"
    config_type = ItemAEConfig
    closed_form = True
    training_cost = 0.5
    pairwise_inputs = ("user", "item", "history_items", "history_ratings")
    all_items_inputs = ("user", "history_items", "history_ratings")
    ranking_inputs = ("history_items", "history_ratings")
    bias_tables = ()

    def context_length(self, config: ItemAEConfig) -> int:
        return config.history

    def implicit_config(self, config: ItemAEConfig) -> ItemAEConfig:
        """Every held-out interaction relevant when ``rank_l2`` is chosen; the rating output the
        ranking head's (``ItemAEConfig.implicit``)."""
        return replace(super().implicit_config(config), relevant_min=0.0, implicit=True)

    def catalogue_limit(self, config: ItemAEConfig) -> int:
        return config.max_items

    def build(self, config: ItemAEConfig, n_users: int, n_items: int, global_mean: float) -> nn.Module:
        return ItemAutoencoder(n_users, n_items, config.implicit)

    def choose(self, config: ItemAEConfig, fit: Interactions, validation: Interactions, n_users: int,
               n_items: int) -> ItemAEConfig:
        return choose(config, fit, validation, n_users, n_items)

    def solve(self, config: ItemAEConfig, ratings: Interactions, n_users: int, n_items: int) -> nn.Module:
        return solve(config, ratings, n_users, n_items)

    def logits(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return model.ranking_logit(*batch)

    def item_vectors(self, model: nn.Module) -> torch.Tensor:
        """Row ``j`` of the ranking weights: how much item ``j`` in a history raises each item's
        logit, so two items are similar when they raise the same items."""
        return model.rank_weights[:model.n_items].detach()

    def all_items_core(self, model: nn.Module) -> nn.Module:
        return AllItemsAE(model)


register(ItemAEFamily())
