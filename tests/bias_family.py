"""A fourth model family defined outside the project's packages, for the extension tests:
user and item biases only, with a small factor model as its ranking head. Tests register it
(``export.models.registry.register(FAMILY)``) for as long as they need it."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from export.models.base import FamilyOption, PairFamily
from export.training.config import TrainingConfig


@dataclass(frozen=True)
class BiasConfig:
    """Biases-only rating model."""

    rank_dim: int = 4
    """Size of the ranking head's user and item factors."""
    training: TrainingConfig = TrainingConfig(learning_rate=1e-2, embedding_decay=0.01, patience=2)


class Biases(nn.Module):
    """``mean + b_u + b_i``; ranking logit ``c_i + <r_u, t_i>``."""

    def __init__(self, n_users: int, n_items: int, rank_dim: int, global_mean: float) -> None:
        super().__init__()
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.rank_user_embedding = nn.Embedding(n_users, rank_dim)
        self.rank_item_embedding = nn.Embedding(n_items, rank_dim)
        self.rank_item_bias = nn.Embedding(n_items, 1)
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unit = self.global_mean + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0]
        return unit, self.ranking_logit(users, items)

    def ranking_logit(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.rank_item_bias(items)[:, 0] + (self.rank_user_embedding(users) * self.rank_item_embedding(items)).sum(-1)


class AllItemsBiases(nn.Module):
    def __init__(self, model: Biases) -> None:
        super().__init__()
        self.model = model

    def forward(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        unit = m.global_mean + m.user_bias(users) + m.item_bias.weight[:, 0]
        return unit, self.ranking(users)

    def ranking(self, users: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.rank_user_embedding(users) @ m.rank_item_embedding.weight.T + m.rank_item_bias.weight[:, 0]


class BiasFamily(PairFamily):
    name = "bias"
    config_type = BiasConfig
    options = (FamilyOption("--bias-rank-dim", "rank_dim", int, "size of the ranking factors (default: 4)"),)
    training_cost = 0.5
    user_tables = ("rank_user_embedding",)
    item_tables = ("rank_item_embedding",)

    def build(self, config: BiasConfig, n_users: int, n_items: int, global_mean: float) -> nn.Module:
        return Biases(n_users, n_items, config.rank_dim, global_mean)

    def all_items_core(self, model: nn.Module) -> nn.Module:
        return AllItemsBiases(model)


FAMILY = BiasFamily()
