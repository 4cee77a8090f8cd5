"""Export wrappers: the graphs written to ONNX, each returning ``score``, ``rating`` and ``rank``.

Pairwise graphs are the trained modules as they are. All-items graphs score every item for
a batch of users, ``[B] -> [B, n_items]``, with the same arithmetic rearranged: MF is one
matrix product, the dense net's first layer is split into a user half and a precomputed item
half, and the LSTM runs each history once and then one step per candidate item. Ranking graphs
are the ``rank`` output alone: for every family one matrix product of user and item factors.

Per-pair intermediates are laid out ``[B, H, n_items]``, items innermost: onnxruntime's
broadcast Add and Mul of a per-user ``[B, H, 1]`` with a per-item ``[1, H, n_items]`` then run
over rows of ``n_items`` values with one scalar each instead of rows of ``H`` values, several
times faster per op; the output head is one ``[1, H] @ [B, H, n_items]`` product.
"""
from __future__ import annotations

import torch
from torch import nn

from .models import BiasedMF, DenseNet, SequenceLSTM
from .ratings import MAX_RATING, MIN_RATING

GATES = ("i", "f", "g", "o")
"""torch's LSTM gate order within its weight rows: input, forget, cell, output."""


def stars(score: torch.Tensor) -> torch.Tensor:
    """Scores on [0, 1] to stars, clipped to [1, 5]."""
    return torch.clamp(score * (MAX_RATING - MIN_RATING) + MIN_RATING, MIN_RATING, MAX_RATING)


class PairwiseGraph(nn.Module):
    """The trained module, one prediction per row (for the LSTM, the window's last step: its
    heads run on that step alone, not on every step of the window)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sequential = isinstance(model, SequenceLSTM)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        score, rank = self.model.last_step(*inputs) if self.sequential else self.model(*inputs)
        return score, stars(score), rank


class AllItemsMF(nn.Module):
    """``mean + b_u + b_i + P[u] @ Q^T`` and ``c + (P[u] * s) @ Q^T + R[u] @ T^T`` for every item."""

    def __init__(self, model: BiasedMF) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.register_buffer("rank_items", torch.cat([model.item_embedding.weight,
                                                          model.rank_item_embedding.weight], dim=1).contiguous())

    def forward(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        p = m.user_embedding(users)
        score = p @ m.item_embedding.weight.T + m.user_bias(users) + m.item_bias.weight[:, 0] + m.global_mean
        return score, stars(score), self.ranking(users)

    def ranking(self, users: torch.Tensor) -> torch.Tensor:
        """Both ranking products in one: ``[p * s, r] @ [q, t]^T + c``."""
        m = self.model
        rank_user = torch.cat([m.user_embedding(users) * m.rank_scale, m.rank_user_embedding(users)], dim=1)
        return rank_user @ self.rank_items.T + m.rank_item_bias.weight[:, 0]


class AllItemsDense(nn.Module):
    """Dense net with its first layer split: ``W [u; i] + b = W_u u + (W_i i + b)``; the ranking
    head is one matrix product ``[A u, r_u] @ [i, t]^T``."""

    def __init__(self, model: DenseNet) -> None:
        super().__init__()
        self.model = model
        dim = model.user_embedding.embedding_dim
        with torch.no_grad():
            weight = model.hidden.weight
            self.register_buffer("user_weight", weight[:, :dim].T.contiguous())
            item_half = weight[:, dim:] @ model.item_embedding.weight.T + model.hidden.bias[:, None]
            self.register_buffer("item_half", item_half.contiguous())                # [H, n_items]
            self.register_buffer("item_offset", (model.item_bias.weight[:, 0] + model.output.bias).contiguous())
            self.register_buffer("head_weight", model.output.weight.contiguous())    # [1, H]
            self.register_buffer("rank_items", torch.cat([model.item_embedding.weight,
                                                          model.rank_item_embedding.weight], dim=1).contiguous())

    def forward(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        user = m.user_embedding(users)
        user_half = user @ self.user_weight                                  # [B, H]
        hidden = torch.relu(user_half[:, :, None] + self.item_half[None, :, :])  # [B, H, n_items]
        score = (self.head_weight @ hidden).squeeze(1) + self.item_offset + m.user_bias(users) + m.global_mean
        return score, stars(score), self.ranking(users)

    def ranking(self, users: torch.Tensor) -> torch.Tensor:
        """``[A u, r] @ [i, t]^T + c``."""
        m = self.model
        rank_user = torch.cat([m.rank_bilinear(m.user_embedding(users)), m.rank_user_embedding(users)], dim=1)
        return rank_user @ self.rank_items.T + m.rank_item_bias.weight[:, 0]


class AllItemsLSTM(nn.Module):
    """Run each user's history once, then one LSTM step for every candidate item.

    The candidate step's input projection ``W_ih [emb(j); r_prev; P user]`` splits into a per-item
    part, precomputed for the whole catalogue, and a per-user part (last rating, and the user
    embedding through ``W_ih_user P``, folded into one matrix).
    Each of the four gates is its own [B, H, n_items] sum of the two, so no [B, 4H, n_items]
    tensor is built and then split: one pass over memory fewer per pair.
    The ranking head needs no candidate step: it is one matrix product ``[user * s, r_u] @ [a, t]^T``.
    """

    def __init__(self, model: SequenceLSTM) -> None:
        super().__init__()
        self.model = model
        lstm = model.lstm
        n_items = model.padding_index
        dim = model.item_embedding.embedding_dim
        with torch.no_grad():
            w_ih, w_hh = lstm.weight_ih_l0, lstm.weight_hh_l0
            bias = lstm.bias_ih_l0 + lstm.bias_hh_l0
            item_gates = w_ih[:, :dim] @ model.item_embedding.weight[:n_items].T + bias[:, None]  # [4H, n_items]
            for name, gate in zip(GATES, item_gates.chunk(4, dim=0)):
                self.register_buffer(f"item_gate_{name}", gate.contiguous())        # [H, n_items]
            self.register_buffer("rating_gate", w_ih[:, dim].contiguous())    # [4H]
            user_weight = w_ih[:, dim + 1:] @ model.user_input.weight         # the projection folded in
            self.register_buffer("user_weight", user_weight.T.contiguous())    # [user_dim, 4H]
            self.register_buffer("hidden_weight", w_hh.T.contiguous())        # [H, 4H]
            self.register_buffer("head_weight", model.output.weight.contiguous())    # [1, H]
            self.register_buffer("item_factors", model.affinity_item_embedding.weight[:n_items].contiguous())
            self.register_buffer("rank_items", torch.cat([self.item_factors, model.rank_item_embedding.weight[:n_items]],
                                                         dim=1).contiguous())
            self.register_buffer("item_offset", (model.item_bias.weight[:n_items, 0]
                                                 + model.output.bias).contiguous())
            self.register_buffer("rank_offset", model.rank_item_bias.weight[:n_items, 0].contiguous())

    def forward(self, users: torch.Tensor, history_items: torch.Tensor,
                history_ratings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        steps = m.step_inputs(users, history_items, history_ratings)
        _, (h, c) = m.lstm(steps)
        h, c = h[0], c[0]                                                     # [B, H]
        known = (history_items[:, -1] != m.padding_index).to(history_ratings.dtype)
        last = (history_ratings[:, -1] - m.global_mean) * known               # [B]
        user = m.user_embedding(users)
        user_gates = (h @ self.hidden_weight + last[:, None] * self.rating_gate
                      + user @ self.user_weight)                                 # [B, 4H]
        i, f, g, o = (u[:, :, None] + getattr(self, f"item_gate_{name}")[None, :, :]   # each [B, H, n_items]
                      for name, u in zip(GATES, user_gates.chunk(4, dim=-1)))
        c_next = torch.sigmoid(f) * c[:, :, None] + torch.sigmoid(i) * torch.tanh(g)
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        affinity = user @ self.item_factors.T                                    # [B, n_items]
        score = ((self.head_weight @ h_next).squeeze(1) + self.item_offset + affinity + m.user_bias(users)
                 + m.global_mean)
        return score, stars(score), self.ranking(users)

    def ranking(self, users: torch.Tensor) -> torch.Tensor:
        """``[user * s, r] @ [a, t]^T + c``: no history needed."""
        m = self.model
        rank_user = torch.cat([m.user_embedding(users) * m.rank_scale, m.rank_user_embedding(users)], dim=1)
        return rank_user @ self.rank_items.T + self.rank_offset


class RankingOnly(nn.Module):
    """An all-items graph cut down to its ``rank`` output, ``users [B] -> [B, n_items]``: what a
    top-N-only run needs. No rating arithmetic (no hidden layer or LSTM step per pair) is in it."""

    def __init__(self, all_items: nn.Module) -> None:
        super().__init__()
        self.all_items = all_items

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.all_items.ranking(users)


def all_items_graph(name: str, model: nn.Module) -> nn.Module:
    """The all-items wrapper for a trained model of family ``name``."""
    wrappers = {"mf": AllItemsMF, "dense": AllItemsDense, "lstm": AllItemsLSTM}
    return wrappers[name](model).eval()

