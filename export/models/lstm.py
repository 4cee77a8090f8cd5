"""The LSTM over a user's items in time order (window 10 by default, padded with a reserved index),
with a global mean, biases and a user-item affinity term."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from contract.errors import ConfigError

from ..data.dataset import Interactions
from ..data.sequences import TRAINING_CONTEXTS, Contexts
from ..training.config import TrainingConfig
from .base import Family, FamilyOption, Inputs, RankingBlocks
from .registry import register

GATES = ("i", "f", "g", "o")
"""torch's LSTM gate order within its weight rows: input, forget, cell, output."""


def lstm_cell(i: torch.Tensor, f: torch.Tensor, g: torch.Tensor, o: torch.Tensor,
              c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from its four gate pre-activations (``GATES``) and the cell state: ``(h, c)``."""
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
    """LSTM over each user's latest items."""

    window: int = 10
    """Sequence length L: the L - 1 latest history items, then the item to rate."""
    dim: int = 32
    """Size of the item embeddings."""
    hidden: int = 32
    """LSTM state size."""
    user_dim: int = 128
    """Size of the user embedding and of the item factors it meets in ``<user, a_item>``."""
    user_input: int = 32
    """Size of the user embedding's linear projection fed to every step: narrower than the
    embedding, because the LSTM's input product is most of its training cost."""
    rank_dim: int = 32
    """Size of the ranking head's own user and item embeddings."""
    training_context: str = "latest"
    """Each training rating's history: "latest", the user's latest ``window - 1`` other ratings,
    which is the context the scoring job gives every pair; or "preceding", the ratings just before
    it in time (next-item training, which rates pairs scored from the latest history worse)."""
    training: TrainingConfig = TrainingConfig(learning_rate=3e-3, embedding_decay=0.02, weight_decay=1e-5, patience=3,
                                              rank_weight=2.0, refit="continue", user_chunk=None, decay_steps=3)

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ConfigError(f"lstm window: expected an integer >= 2 (history plus the item to rate), "
                              f"got {self.window}")
        if self.training_context not in TRAINING_CONTEXTS:
            raise ConfigError(f"lstm training_context: expected one of {sorted(TRAINING_CONTEXTS)}, "
                              f"got {self.training_context!r}")


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

    def centred(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """Ratings centred on the global mean, 0 where ``items`` is the padding index."""
        return (ratings - self.global_mean) * (items != self.padding_index).to(ratings.dtype)

    def step_inputs(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """LSTM inputs [B, L, dim + 1 + user_input]: item embedding, previous centred rating, and the
        user embedding's projection to ``user_input`` dimensions."""
        centred = self.centred(items, ratings)
        previous = torch.cat([torch.zeros_like(centred[:, :1]), centred[:, :-1]], dim=1)
        user = self.user_input(self.user_embedding(users))[:, None, :].expand(-1, items.shape[1], -1)
        return torch.cat([self.item_embedding(items), previous.unsqueeze(-1), user], dim=-1)

    def forward(self, users: torch.Tensor, items: torch.Tensor,
                ratings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``users`` [B], ``items`` int64 [B, L], ``ratings`` [B, L] -> per-step unit rating and logit [B, L]."""
        states, _ = self.lstm(self.step_inputs(users, items, ratings))
        return self._outputs(users, items, states)

    def last_step(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor,
                  histories: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit rating and logit [B] of each window's last item: ``forward(...)[:, -1]`` of both outputs.

        ``histories`` [B] labels each window's history (its user and its first L - 1 items and
        ratings); windows with equal labels must have equal histories. The LSTM then runs over each
        distinct history once, and the last step is written out as its cell's arithmetic: every
        gate input but the last item's embedding (the state, the previous rating, the user) is a
        history's, computed once per history, so a window adds one small product. Without labels
        it runs over each window (the exported pairwise graph). Either way the heads read the last
        step only.
        """
        if histories is None:
            states, _ = self.lstm(self.step_inputs(users, items, ratings))
            return self._outputs(users, items[:, -1], states[:, -1])
        n = users.shape[0]
        labels, inverse = torch.unique(histories, return_inverse=True)
        first = torch.full((labels.shape[0],), n, device=users.device).scatter_reduce_(
            0, inverse, torch.arange(n, device=users.device), "amin")   # one window per history
        _, (h, c) = self.lstm(self.step_inputs(users[first], items[first, :-1], ratings[first, :-1]))
        w_ih, dim = self.lstm.weight_ih_l0, self.item_embedding.embedding_dim
        previous = self.centred(items[first, -2], ratings[first, -2])              # the last step's rating input
        user = self.user_input(self.user_embedding(users[first]))
        history_gates = (h[0] @ self.lstm.weight_hh_l0.T + previous[:, None] * w_ih[:, dim]
                         + user @ w_ih[:, dim + 1:].T + self.lstm.bias_ih_l0 + self.lstm.bias_hh_l0)   # [histories, 4H]
        # index_select, not indexing: its gradient (index_add_) sums in a fixed order on the CPU
        gates = history_gates.index_select(0, inverse) + self.item_embedding(items[:, -1]) @ w_ih[:, :dim].T
        state, _ = lstm_cell(*gates.chunk(len(GATES), dim=1), c[0].index_select(0, inverse))
        return self._outputs(users, items[:, -1], state)

    def _outputs(self, users: torch.Tensor, items: torch.Tensor,
                 states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit rating and logit of ``items`` [B] or [B, L] from the LSTM's outputs there, [B(, L), H]."""
        user, user_bias = self.user_embedding(users), self.user_bias(users)      # [B, D], [B, 1]
        if items.dim() == 2:
            user = user[:, None, :]
        else:
            user_bias = user_bias[:, 0]
        factors = self.affinity_item_embedding(items)
        unit = (self.global_mean + user_bias + self.item_bias(items)[..., 0]
                + self.output(states)[..., 0] + (user * factors).sum(-1))
        return unit, self._logit(users, items, user, factors)

    def ranking_logit(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The ranking head alone, no LSTM: logit [B] of ``items`` [B] for ``users`` [B]."""
        return self._logit(users, items, self.user_embedding(users), self.affinity_item_embedding(items))

    def ranking_user(self, users: torch.Tensor) -> torch.Tensor:
        """The users' side of the ranking head, ``[user * s, r_u]`` [B, user_dim + rank_dim], the
        user read detached."""
        return torch.cat([self.user_embedding(users).detach() * self.rank_scale, self.rank_user_embedding(users)], 1)

    def ranking_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The items' side of the ranking head, ``[a, t]`` [n_items, user_dim + rank_dim] (no
        padding row), and its offsets ``c`` [n_items]: the logit is ``ranking_user(u) @ [a, t]^T + c``."""
        n_items = self.padding_index
        return (torch.cat([self.affinity_item_embedding.weight[:n_items].detach(),
                           self.rank_item_embedding.weight[:n_items]], 1), self.rank_item_bias.weight[:n_items, 0])

    def ranking_blocks(self) -> RankingBlocks:
        """The head's blocks: its own ``r``, ``t``, ``c`` and ``s``, reading the user and ``a``
        (no padding rows)."""
        n_items = self.padding_index
        return RankingBlocks(self.rank_user_embedding.weight, self.rank_item_embedding.weight[:n_items],
                             self.rank_item_bias.weight[:n_items, 0], self.rank_scale,
                             self.user_embedding.weight.detach(), self.affinity_item_embedding.weight[:n_items].detach())

    def _logit(self, users: torch.Tensor, items: torch.Tensor, user: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """``user`` shaped to broadcast against ``factors``. The head reads the rating factors as
        they are (detached): its loss trains its own parameters, never what the ratings rely on."""
        rank_user = self.rank_user_embedding(users)
        if items.dim() == 2:
            rank_user = rank_user[:, None, :]
        return (self.rank_item_bias(items)[..., 0]
                + (user.detach() * self.rank_scale * factors.detach()).sum(-1)
                + (rank_user * self.rank_item_embedding(items)).sum(-1))


class AllItemsLSTM(nn.Module):
    """Run each user's history once, then one LSTM step for every candidate item.

    The candidate step's input projection ``W_ih [emb(j); r_prev; P user]`` splits into a per-item
    part, precomputed for the whole catalogue, and a per-user part (last rating, and the user
    embedding through ``W_ih_user P``, folded into one matrix).
    Each of the four gates is its own [B, H, n_items] sum of the two, so no [B, 4H, n_items]
    tensor is built and then split: one pass over memory fewer per pair.
    Per-pair tensors are laid out ``[B, H, n_items]``, items innermost, as in the dense net.
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
            rank_items, rank_offsets = model.ranking_items()
            self.register_buffer("rank_items", rank_items.contiguous())
            self.register_buffer("rank_offset", rank_offsets.contiguous())
            self.register_buffer("item_offset", (model.item_bias.weight[:n_items, 0]
                                                 + model.output.bias).contiguous())

    def forward(self, users: torch.Tensor, history_items: torch.Tensor,
                history_ratings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        steps = m.step_inputs(users, history_items, history_ratings)
        _, (h, c) = m.lstm(steps)
        h, c = h[0], c[0]                                                     # [B, H]
        last = m.centred(history_items[:, -1], history_ratings[:, -1])     # [B]
        user = m.user_embedding(users)
        user_gates = (h @ self.hidden_weight + last[:, None] * self.rating_gate
                      + user @ self.user_weight)                                 # [B, 4H]
        i, f, g, o = (u[:, :, None] + getattr(self, f"item_gate_{name}")[None, :, :]   # each [B, H, n_items]
                      for name, u in zip(GATES, user_gates.chunk(4, dim=-1)))
        h_next, _ = lstm_cell(i, f, g, o, c[:, :, None])
        affinity = user @ self.item_factors.T                                    # [B, n_items]
        unit = ((self.head_weight @ h_next).squeeze(1) + self.item_offset + affinity + m.user_bias(users)
                + m.global_mean)
        return unit, self.ranking(users)

    def ranking(self, users: torch.Tensor) -> torch.Tensor:
        """``[user * s, r] @ [a, t]^T + c``: no history needed."""
        return self.model.ranking_user(users) @ self.rank_items.T + self.rank_offset


class LastStep(nn.Module):
    """The pairwise graph's core: each window's last step, the LSTM run over every window."""

    def __init__(self, model: SequenceLSTM) -> None:
        super().__init__()
        self.model = model

    def forward(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.last_step(users, items, ratings)


@dataclasses.dataclass(frozen=True)
class WindowRows:
    """The LSTM's training rows: each rating's context (``Contexts``), its window gathered when a
    batch draws it. A batch is ``(users, window items, window ratings, history labels)``: the
    labels let the model run the LSTM over each distinct history in the batch once."""

    contexts: Contexts
    length: int
    pad: int
    device: torch.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.contexts)

    @property
    def users(self) -> torch.Tensor:
        return torch.as_tensor(self.contexts.users)

    def to(self, device: torch.device) -> "WindowRows":
        return dataclasses.replace(self, device=torch.device(device))

    def batch(self, index: torch.Tensor) -> Inputs:
        w = self.contexts.windows(index.cpu().numpy(), self.length, self.pad)
        return tuple(torch.as_tensor(x).to(self.device) for x in (w.users, w.items, w.ratings, w.histories))


class LSTMFamily(Family):
    """The LSTM, the third model of the introductory article."""

    name = "lstm"
    config_type = LSTMConfig
    training_cost = 3.0
    untuned_reference_rmse = 0.43
    needs_order = True
    options = (FamilyOption("--window", "window", int, "LSTM sequence length L (default: 10)"),)
    pairwise_inputs = ("user", "window_items", "window_ratings")
    all_items_inputs = ("user", "history_items", "history_ratings")
    user_tables = ("user_embedding", "rank_user_embedding")
    item_tables = ("item_embedding", "affinity_item_embedding", "rank_item_embedding")

    def context_length(self, config: LSTMConfig) -> int:
        return config.window - 1

    def build(self, config: LSTMConfig, n_users: int, n_items: int, global_mean: float) -> nn.Module:
        return SequenceLSTM(n_users, n_items, config.dim, config.hidden, config.user_dim, config.user_input,
                            config.rank_dim, global_mean)

    def training_inputs(self, train: Interactions, config: LSTMConfig, n_items: int) -> tuple[WindowRows, torch.Tensor]:
        """One window per training rating, in the configured context, gathered batch by batch."""
        contexts = TRAINING_CONTEXTS[config.training_context](train, config.window)
        return WindowRows(contexts, config.window, n_items), torch.as_tensor(contexts.unit)

    def outputs(self, model: nn.Module, batch: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Training windows carry history labels; pair inputs score every pair from its user's
        latest history, so there the user labels it."""
        users, items, ratings, *labels = batch
        return model.last_step(users, items, ratings, labels[0] if labels else users)

    def logits(self, model: nn.Module, batch: Inputs) -> torch.Tensor:
        return model.ranking_logit(batch[0], batch[1][:, -1])

    def with_items(self, batch: Inputs, items: torch.Tensor) -> Inputs:
        windows = batch[1].clone()
        windows[:, -1] = items
        return batch[0], windows, *batch[2:]

    def penalty_ids(self, batch: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        return batch[0], batch[1][:, -1]

    def pairwise_core(self, model: nn.Module) -> nn.Module:
        return LastStep(model)

    def all_items_core(self, model: nn.Module) -> nn.Module:
        return AllItemsLSTM(model)


register(LSTMFamily())
