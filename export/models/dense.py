"""The dense net: user and item embeddings concatenated, ``Linear -> ReLU -> Linear(1)``, plus biases."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..training.config import TrainingConfig
from .base import PairFamily, RankingBlocks
from .registry import register


@dataclass(frozen=True)
class DenseConfig:
    """Feed-forward net on concatenated user and item embeddings."""

    dim: int = 64
    """Size of each of the user and item embeddings: the largest rank. A fit with
    ``TrainingConfig.rank_cut`` may cut it (``cut_rank``); a bundle's manifest records the size
    the model was cut to."""
    hidden: int = 128
    """Width of the hidden ReLU layer."""
    rank_dim: int = 32
    """Size of the ranking head's own user and item embeddings."""
    training: TrainingConfig = TrainingConfig(learning_rate=2e-3, embedding_decay=0.03, weight_decay=1e-4,
                                              reference_ratings=100_000, patience=5, rank_weight=2.0,
                                              refit="continue", plateau_step_factor=0.5,
                                              plateau_step_floor=1.0, rank_cut=True)


class DenseNet(nn.Module):
    """Feed-forward net on concatenated embeddings: ``Linear -> ReLU -> Linear(1)``, plus biases.

    The ranking head, ``c_i + <A e_u, e_i> + <r_u, t_i>``, is bilinear in the net's embeddings
    plus factors of its own: one matrix product over the catalogue, where the rating needs the
    hidden layer for every pair. The joint loss reaches the embeddings through it (not the hidden
    layer), which regularises them; the ranking fit then zeroes ``A`` and ranks by ``r``, ``t``.
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
        """``users``, ``items`` int64 [B] -> unit rating [B] and ranking logit [B]."""
        u, i = self.user_embedding(users), self.item_embedding(items)
        return self._rating(users, items, u, i), self._logit(items, *self._ranking_user(users, u), i)

    def with_sampled(self, users: torch.Tensor, items: torch.Tensor,
                     sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward`` and the ranking logit [B] of ``sampled`` items, the users' side of the
        ranking head (``A e_u`` and ``r_u``) computed once for both."""
        u, i = self.user_embedding(users), self.item_embedding(items)
        user_side = self._ranking_user(users, u)
        return (self._rating(users, items, u, i), self._logit(items, *user_side, i),
                self._logit(sampled, *user_side, self.item_embedding(sampled)))

    def with_negatives(self, users: torch.Tensor, items: torch.Tensor,
                       negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unit ratings and logits [B] of ``items`` and of ``negatives`` for ``users``: ``forward``
        of both, with the users' half of the hidden layer (``W_u e_u``, as the all-items graph
        splits it) and of the ranking head computed once."""
        u = self.user_embedding(users)
        dim = u.shape[1]
        user_hidden = u @ self.hidden.weight[:, :dim].T
        user_side = self._ranking_user(users, u)
        bias = self.global_mean + self.user_bias(users)[:, 0]
        out = []
        for chosen in (items, negatives):
            i = self.item_embedding(chosen)
            hidden = torch.relu(user_hidden + nn.functional.linear(i, self.hidden.weight[:, dim:], self.hidden.bias))
            out.append((bias + self.item_bias(chosen)[:, 0] + self.output(hidden)[:, 0],
                        self._logit(chosen, *user_side, i)))
        return out[0][0], out[1][0], out[0][1], out[1][1]

    def ranking_logit(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The ranking head alone: logit [B]."""
        return self._logit(items, *self._ranking_user(users, self.user_embedding(users)), self.item_embedding(items))

    def ranking_user(self, users: torch.Tensor) -> torch.Tensor:
        """The users' side of the ranking head, ``[A e_u, r_u]`` [B, dim + rank_dim], the net's
        embeddings read detached (the ranking fit trains the head alone)."""
        return torch.cat([self.rank_bilinear(self.user_embedding(users).detach()), self.rank_user_embedding(users)], 1)

    def ranking_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The items' side of the ranking head, ``[e_i, t_i]`` [n_items, dim + rank_dim], and its
        offsets ``c`` [n_items]: the logit is ``ranking_user(u) @ [e, t]^T + c``."""
        return (torch.cat([self.item_embedding.weight.detach(), self.rank_item_embedding.weight], 1),
                self.rank_item_bias.weight[:, 0])

    def ranking_blocks(self) -> RankingBlocks:
        """The head's blocks: its own ``r``, ``t`` and ``c``; ``A`` is zero while the ranking fit
        runs (``DenseFamily.ranking_fixed``), so the head reads nothing else."""
        return RankingBlocks(self.rank_user_embedding.weight, self.rank_item_embedding.weight,
                             self.rank_item_bias.weight[:, 0])

    def _rating(self, users: torch.Tensor, items: torch.Tensor, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.hidden(torch.cat([u, i], dim=-1)))
        return self.global_mean + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0] + self.output(hidden)[:, 0]

    def _ranking_user(self, users: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The users' side of the ranking head: ``A e_u`` and ``r_u``."""
        return self.rank_bilinear(u), self.rank_user_embedding(users)

    def _logit(self, items: torch.Tensor, bilinear: torch.Tensor, rank_user: torch.Tensor,
               i: torch.Tensor) -> torch.Tensor:
        return (self.rank_item_bias(items)[:, 0] + (bilinear * i).sum(-1)
                + (rank_user * self.rank_item_embedding(items)).sum(-1))


class AllItemsDense(nn.Module):
    """The dense net with its first layer split, ``W [u; i] + b = W_u u + (W_i i + b)``, the item
    half precomputed for the catalogue; the ranking head is one product ``[A u, r_u] @ [i, t]^T``.

    The hidden layer is laid out ``[B, H, n_items]``, items innermost: onnxruntime's broadcast add
    of a per-user ``[B, H, 1]`` and a per-item ``[1, H, n_items]`` then runs over long rows, and the
    output layer is one ``[1, H] @ [B, H, n_items]`` product (docs/performance.md).
    """

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
            items, offsets = model.ranking_items()
            self.register_buffer("rank_items", items.contiguous())
            self.register_buffer("rank_offsets", offsets.contiguous())

    def forward(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        user_half = m.user_embedding(users) @ self.user_weight                    # [B, H]
        hidden = torch.relu(user_half[:, :, None] + self.item_half[None, :, :])  # [B, H, n_items]
        unit = (self.head_weight @ hidden).squeeze(1) + self.item_offset + m.user_bias(users) + m.global_mean
        return unit, self.ranking(users)

    def ranking(self, users: torch.Tensor) -> torch.Tensor:
        """``[A u, r] @ [i, t]^T + c``."""
        return self.model.ranking_user(users) @ self.rank_items.T + self.rank_offsets


@torch.no_grad()
def cut_rank(model: DenseNet, rank: int) -> DenseNet:
    """``model`` with each of its embedding tables projected onto its ``rank`` leading right singular
    directions (``E -> E V``, the best rank-``rank`` approximation of the table, ``E V V^T``, written
    in ``rank`` columns), and the layers that read them rewritten to match: the hidden layer's user
    and item halves become ``W_u V_u`` and ``W_i V_i``, the ranking head's bilinear map
    ``V_i^T A V_u``. The net then computes on the approximated tables exactly; at the full rank it
    is the same net. Directions past a table's own rank are zero columns. Biases, the output layer
    and the ranking head's own tables are copied."""
    users, items = model.user_embedding.weight.double(), model.item_embedding.weight.double()
    user_basis, item_basis = _leading_directions(users, rank), _leading_directions(items, rank)
    dim = users.shape[1]
    weight = model.hidden.weight.double()
    cut = DenseNet(users.shape[0], items.shape[0], rank, model.hidden.out_features,
                   model.rank_user_embedding.embedding_dim, 0.0).to(users.device)
    cut.load_state_dict({**model.state_dict(),
                         "user_embedding.weight": (users @ user_basis).float(),
                         "item_embedding.weight": (items @ item_basis).float(),
                         "hidden.weight": torch.cat([weight[:, :dim] @ user_basis,
                                                     weight[:, dim:] @ item_basis], dim=1).float(),
                         "rank_bilinear.weight": (item_basis.T @ model.rank_bilinear.weight.double()
                                                  @ user_basis).float()})
    return cut.train(model.training)


def _leading_directions(table: torch.Tensor, rank: int) -> torch.Tensor:
    """``[dim, rank]``: the ``rank`` leading right singular vectors of ``table`` as columns, zero
    columns past its own rank."""
    _, _, v_t = torch.linalg.svd(table, full_matrices=False)
    kept = min(rank, v_t.shape[0])
    basis = torch.zeros(table.shape[1], rank, dtype=table.dtype, device=table.device)
    basis[:, :kept] = v_t[:kept].T
    return basis


class DenseFamily(PairFamily):
    """The dense net, the second model of the introductory article."""

    name = "dense"
    config_type = DenseConfig
    ranking_fixed = ("rank_bilinear.weight",)
    """The bilinear map over the net's embeddings regularises them in the rating fit's joint loss;
    the ranking fit sets it to zero and ranks by the head's own factors, which rank better than
    the embeddings the hidden layer reads (docs/models.md)."""
    training_cost = 2.0
    untuned_reference_rmse = 0.28

    def build(self, config: DenseConfig, n_users: int, n_items: int, global_mean: float) -> nn.Module:
        return DenseNet(n_users, n_items, config.dim, config.hidden, config.rank_dim, global_mean)

    def all_items_core(self, model: nn.Module) -> nn.Module:
        return AllItemsDense(model)

    def rank(self, model: nn.Module) -> int:
        return model.user_embedding.embedding_dim

    def cut(self, model: nn.Module, rank: int) -> nn.Module:
        return cut_rank(model, rank)

    def trained_config(self, config: DenseConfig, model: nn.Module) -> DenseConfig:
        return replace(config, dim=self.rank(model))


register(DenseFamily())
