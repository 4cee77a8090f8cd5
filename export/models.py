"""The three rating networks: plain ``nn.Module``s, tensors in, two outputs out.

Each returns ``(score, rank)``: ``score`` is the rating on [0, 1], a global mean and user/item
biases around the family's core; ``rank`` is a logit that the user rates the item at all (a
second head on the same representation, trained on sampled unrated items), which orders the
recommendations. Both live in ``forward``, so the exported graph is the whole prediction;
``rank(users, items)`` is the ranking head alone (for the LSTM, without running the LSTM), which
training uses to score its sampled unrated items. No training logic lives here.
"""
from __future__ import annotations

import torch
from torch import nn


class BiasedMF(nn.Module):
    """Matrix factorisation: ``mean + b_u + b_i + <p_u, q_i>``.

    The ranking head, ``c_i + <p_u * s, q_i> + <r_u, t_i>``, reads the rating factors (detached, so
    that learning to rank never pulls on what rates) reweighted by ``s``, plus factors of its own.
    """

    def __init__(self, n_users: int, n_items: int, dim: int, rank_dim: int, global_mean: float) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.rank_scale = nn.Parameter(torch.ones(dim))
        self.rank_user_embedding = nn.Embedding(n_users, rank_dim)
        self.rank_item_embedding = nn.Embedding(n_items, rank_dim)
        self.rank_item_bias = nn.Embedding(n_items, 1)
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``users``, ``items`` int64 [B] -> score [B] and rank logit [B]."""
        p, q = self.user_embedding(users), self.item_embedding(items)
        score = self.global_mean + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0] + (p * q).sum(-1)
        return score, self._rank(users, items, p, q)

    def rank(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The ranking head alone: rank logit [B]."""
        return self._rank(users, items, self.user_embedding(users), self.item_embedding(items))

    def _rank(self, users: torch.Tensor, items: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return (self.rank_item_bias(items)[:, 0] + (p.detach() * self.rank_scale * q.detach()).sum(-1)
                + (self.rank_user_embedding(users) * self.rank_item_embedding(items)).sum(-1))


class DenseNet(nn.Module):
    """Feed-forward net on concatenated embeddings: ``Linear -> ReLU -> Linear(1)``, plus biases.

    The ranking head, ``c_i + <A e_u, e_i> + <r_u, t_i>``, is bilinear in the net's embeddings
    plus factors of its own: one matrix product over the catalogue, where the rating needs the
    hidden layer for every pair. Its loss reaches the embeddings too (not the hidden layer), which
    regularises them: the net rates better with it than without.
    """

    def __init__(self, n_users: int, n_items: int, dim: int, hidden: int, rank_dim: int, global_mean: float) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.hidden = nn.Linear(2 * dim, hidden)
        self.output = nn.Linear(hidden, 1)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.rank_bilinear = nn.Linear(dim, dim, bias=False)
        self.rank_user_embedding = nn.Embedding(n_users, rank_dim)
        self.rank_item_embedding = nn.Embedding(n_items, rank_dim)
        self.rank_item_bias = nn.Embedding(n_items, 1)
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``users``, ``items`` int64 [B] -> score [B] and rank logit [B]."""
        u, i = self.user_embedding(users), self.item_embedding(items)
        hidden = torch.relu(self.hidden(torch.cat([u, i], dim=-1)))
        score = (self.global_mean + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0]
                 + self.output(hidden)[:, 0])
        return score, self._rank(users, items, u, i)

    def rank(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The ranking head alone: rank logit [B]."""
        return self._rank(users, items, self.user_embedding(users), self.item_embedding(items))

    def _rank(self, users: torch.Tensor, items: torch.Tensor, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return (self.rank_item_bias(items)[:, 0] + (self.rank_bilinear(u) * i).sum(-1)
                + (self.rank_user_embedding(users) * self.rank_item_embedding(items)).sum(-1))


class SequenceLSTM(nn.Module):
    """LSTM over a user's items in time order; a Linear on each step's output rates that step's item.

    Step ``t`` sees item ``t``'s embedding, the rating of item ``t - 1`` (centred on the global
    mean, 0 where padded; a step never sees its own rating) and a linear projection of the user's
    embedding (narrower than the embedding: the LSTM's input product is most of its cost). The user
    representation that a ten-item window cannot hold also meets each step's item directly:
    ``<user, a_item>``, with item factors ``a`` of their own, is added to the Linear head's output.

    The ranking head, ``c_i + <user * s, a_i> + <r_u, t_i>``, reads the user and the item factors
    (detached, so that learning to rank never pulls on what rates) plus factors of its own: one
    matrix product over the catalogue, with no LSTM step per candidate.
    """

    def __init__(self, n_users: int, n_items: int, dim: int, hidden: int, user_dim: int, user_input: int,
                 rank_dim: int, global_mean: float) -> None:
        super().__init__()
        self.padding_index = n_items
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
        self.user_embedding = nn.Embedding(n_users, user_dim)
        self.user_input = nn.Linear(user_dim, user_input, bias=False)
        self.affinity_item_embedding = nn.Embedding(n_items + 1, user_dim, padding_idx=n_items)
        self.lstm = nn.LSTM(dim + 1 + user_input, hidden, batch_first=True)
        self.output = nn.Linear(hidden, 1)
        self.rank_scale = nn.Parameter(torch.ones(user_dim))
        self.rank_user_embedding = nn.Embedding(n_users, rank_dim)
        self.rank_item_embedding = nn.Embedding(n_items + 1, rank_dim, padding_idx=n_items)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items + 1, 1, padding_idx=n_items)
        self.rank_item_bias = nn.Embedding(n_items + 1, 1, padding_idx=n_items)
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))

    def step_inputs(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """LSTM inputs [B, L, dim + 1 + user_input]: item embedding, previous centred rating, and the
        user embedding's projection to ``user_input`` dimensions."""
        known = (items != self.padding_index).to(ratings.dtype)
        centred = (ratings - self.global_mean) * known
        previous = torch.cat([torch.zeros_like(centred[:, :1]), centred[:, :-1]], dim=1)
        user = self.user_input(self.user_embedding(users))[:, None, :].expand(-1, items.shape[1], -1)
        return torch.cat([self.item_embedding(items), previous.unsqueeze(-1), user], dim=-1)

    def forward(self, users: torch.Tensor, items: torch.Tensor,
                ratings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``users`` [B], ``items`` int64 [B, L], ``ratings`` [B, L] -> per-step score and rank [B, L]."""
        states, _ = self.lstm(self.step_inputs(users, items, ratings))
        return self._outputs(users, items, states)

    def last_step(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor,
                  histories: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Score and rank [B] of each window's last item: ``forward(...)[:, -1]`` of both outputs.

        ``histories`` [B] labels each window's history (its user and its first L - 1 items and
        ratings); windows with equal labels must have equal histories. The LSTM then runs over each
        distinct history once and takes one step per window from that history's state. Without
        labels it runs over each window (the exported pairwise graph). Either way the heads read
        the last step only.
        """
        if histories is None:
            states, _ = self.lstm(self.step_inputs(users, items, ratings))
            return self._outputs(users, items[:, -1], states[:, -1])
        n = users.shape[0]
        labels, inverse = torch.unique(histories, return_inverse=True)
        first = torch.full((labels.shape[0],), n, device=users.device).scatter_reduce_(
            0, inverse, torch.arange(n, device=users.device), "amin")   # one window per history
        _, (h, c) = self.lstm(self.step_inputs(users[first], items[first, :-1], ratings[first, :-1]))
        last = self.step_inputs(users, items[:, -2:], ratings[:, -2:])[:, -1:]
        states, _ = self.lstm(last, (h[:, inverse], c[:, inverse]))
        return self._outputs(users, items[:, -1], states[:, 0])

    def _outputs(self, users: torch.Tensor, items: torch.Tensor,
                 states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score and rank of ``items`` [B] or [B, L] from the LSTM's outputs there, [B(, L), H]."""
        user, user_bias = self.user_embedding(users), self.user_bias(users)      # [B, D], [B, 1]
        if items.dim() == 2:
            user = user[:, None, :]
        else:
            user_bias = user_bias[:, 0]
        factors = self.affinity_item_embedding(items)
        score = (self.global_mean + user_bias + self.item_bias(items)[..., 0]
                 + self.output(states)[..., 0] + (user * factors).sum(-1))
        return score, self._rank(users, items, user, factors)

    def rank(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The ranking head alone, no LSTM: rank logit [B] of ``items`` [B] for ``users`` [B]."""
        return self._rank(users, items, self.user_embedding(users), self.affinity_item_embedding(items))

    def _rank(self, users: torch.Tensor, items: torch.Tensor, user: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """``user`` shaped to broadcast against ``factors``. The head reads the rating factors as
        they are (detached): its loss trains its own parameters, never what the ratings rely on."""
        rank_user = self.rank_user_embedding(users)
        if items.dim() == 2:
            rank_user = rank_user[:, None, :]
        return (self.rank_item_bias(items)[..., 0]
                + (user.detach() * self.rank_scale * factors.detach()).sum(-1)
                + (rank_user * self.rank_item_embedding(items)).sum(-1))
