"""The three rating networks: plain ``nn.Module``s, tensors in and scores on [0, 1] out.

Each adds a global mean and user/item biases around its family's core, so the exported graph
is the whole prediction. No training logic lives here.
"""
from __future__ import annotations

import torch
from torch import nn


class BiasedMF(nn.Module):
    """Matrix factorisation: ``mean + b_u + b_i + <p_u, q_i>``."""

    def __init__(self, n_users: int, n_items: int, dim: int, global_mean: float) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores for pairs: ``users``, ``items`` int64 [B] -> float32 [B]."""
        dot = (self.user_embedding(users) * self.item_embedding(items)).sum(dim=-1)
        return self.global_mean + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0] + dot


class DenseNet(nn.Module):
    """Feed-forward net on concatenated embeddings: ``Linear -> ReLU -> Linear(1)``, plus biases."""

    def __init__(self, n_users: int, n_items: int, dim: int, hidden: int, global_mean: float) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.hidden = nn.Linear(2 * dim, hidden)
        self.output = nn.Linear(hidden, 1)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores for pairs: ``users``, ``items`` int64 [B] -> float32 [B]."""
        x = torch.cat([self.user_embedding(users), self.item_embedding(items)], dim=-1)
        mlp = self.output(torch.relu(self.hidden(x)))[:, 0]
        return self.global_mean + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0] + mlp


class SequenceLSTM(nn.Module):
    """LSTM over a user's items in time order; a Linear on each step's output rates that step's item.

    Step ``t`` sees item ``t``'s embedding and the rating of item ``t - 1`` (centred on the
    global mean, 0 where padded), so a step never sees its own rating. The user bias gives the
    model a user representation beyond the ten-item window.
    """

    def __init__(self, n_users: int, n_items: int, dim: int, hidden: int, global_mean: float) -> None:
        super().__init__()
        self.padding_index = n_items
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
        self.lstm = nn.LSTM(dim + 1, hidden, batch_first=True)
        self.output = nn.Linear(hidden, 1)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items + 1, 1, padding_idx=n_items)
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))

    def step_inputs(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """LSTM inputs [B, L, dim + 1]: item embeddings and the previous step's centred rating."""
        known = (items != self.padding_index).to(ratings.dtype)
        centred = (ratings - self.global_mean) * known
        previous = torch.cat([torch.zeros_like(centred[:, :1]), centred[:, :-1]], dim=1)
        return torch.cat([self.item_embedding(items), previous.unsqueeze(-1)], dim=-1)

    def forward(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """Per-step scores: ``users`` [B], ``items`` int64 [B, L], ``ratings`` [B, L] -> [B, L]."""
        states, _ = self.lstm(self.step_inputs(items, ratings))
        return (self.global_mean + self.user_bias(users) + self.item_bias(items)[..., 0]
                + self.output(states)[..., 0])
