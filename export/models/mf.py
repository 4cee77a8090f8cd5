"""Matrix factorisation: user and item embeddings, dot product, plus a global mean and biases."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..training.config import TrainingConfig
from .base import PairFamily
from .registry import register


@dataclass(frozen=True)
class MFConfig:
    """Biased matrix factorisation."""

    dim: int = 128
    """Size of the user and item embeddings: the largest rank. A fit with ``TrainingConfig.rank_cut``
    may cut it (``cut_rank``); a bundle's manifest records the size the model was cut to."""
    rank_dim: int = 32
    """Size of the ranking head's own user and item embeddings."""
    training: TrainingConfig = TrainingConfig(learning_rate=2e-3, embedding_decay=0.025, patience=5, rank_weight=2.0,
                                              decay_steps=4, rank_cut=True)


class BiasedMF(nn.Module):
    """``mean + b_u + b_i + <p_u, q_i>`` on [0, 1].

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
        """``users``, ``items`` int64 [B] -> unit rating [B] and ranking logit [B]."""
        p, q = self.user_embedding(users), self.item_embedding(items)
        return self._rating(users, items, p, q), self._logit(items, *self._ranking_user(users, p), q)

    def with_sampled(self, users: torch.Tensor, items: torch.Tensor,
                     sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward`` and the ranking logit [B] of ``sampled`` items, the users' side of the
        ranking head (``p * s`` and ``r_u``) looked up and scaled once for both."""
        p, q = self.user_embedding(users), self.item_embedding(items)
        user_side = self._ranking_user(users, p)
        return (self._rating(users, items, p, q), self._logit(items, *user_side, q),
                self._logit(sampled, *user_side, self.item_embedding(sampled)))

    def ranking_logit(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The ranking head alone: logit [B]."""
        return self._logit(items, *self._ranking_user(users, self.user_embedding(users)), self.item_embedding(items))

    def _rating(self, users: torch.Tensor, items: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.global_mean + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0] + (p * q).sum(-1)

    def _ranking_user(self, users: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The users' side of the ranking head: ``p * s`` (``p`` detached) and ``r_u``."""
        return p.detach() * self.rank_scale, self.rank_user_embedding(users)

    def _logit(self, items: torch.Tensor, scaled: torch.Tensor, rank_user: torch.Tensor,
               q: torch.Tensor) -> torch.Tensor:
        return (self.rank_item_bias(items)[:, 0] + (scaled * q.detach()).sum(-1)
                + (rank_user * self.rank_item_embedding(items)).sum(-1))


class AllItemsMF(nn.Module):
    """``mean + b_u + b_i + P[u] @ Q^T`` and ``c + (P[u] * s) @ Q^T + R[u] @ T^T`` for every item."""

    def __init__(self, model: BiasedMF) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.register_buffer("rank_items", torch.cat([model.item_embedding.weight,
                                                          model.rank_item_embedding.weight], dim=1).contiguous())

    def forward(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        p = m.user_embedding(users)
        unit = p @ m.item_embedding.weight.T + m.user_bias(users) + m.item_bias.weight[:, 0] + m.global_mean
        return unit, self.ranking(users)

    def ranking(self, users: torch.Tensor) -> torch.Tensor:
        """Both ranking products in one: ``[p * s, r] @ [q, t]^T + c``."""
        m = self.model
        rank_user = torch.cat([m.user_embedding(users) * m.rank_scale, m.rank_user_embedding(users)], dim=1)
        return rank_user @ self.rank_items.T + m.rank_item_bias.weight[:, 0]


@torch.no_grad()
def cut_rank(model: BiasedMF, rank: int) -> BiasedMF:
    """``model`` with ``P Q^T`` cut to its ``rank`` leading singular directions (the best rank-``rank``
    approximation), each shared evenly between the new factors (``U = Qp A sqrt(S)``,
    ``V = Qq B sqrt(S)`` from ``P = Qp Rp``, ``Q = Qq Rq``, ``Rp Rq^T = A S B^T``); columns past
    the product's own rank are zero. Biases and the ranking head's own tables are copied. The
    ranking scale becomes the diagonal of ``P diag(s) Q^T`` written in the new basis: exact
    while ``s`` is uniform (as initialised), the nearest diagonal otherwise."""
    p = model.user_embedding.weight.double()
    q = model.item_embedding.weight.double()
    p_basis, p_r = torch.linalg.qr(p)
    q_basis, q_r = torch.linalg.qr(q)
    a, s, b_t = torch.linalg.svd(p_r @ q_r.T, full_matrices=False)
    kept = min(rank, s.shape[0])
    a, s, b = a[:, :kept], s[:kept], b_t[:kept].T
    root = s.sqrt()
    scaled = torch.einsum("rj,rc,c,dc,dj->j", a, p_r, model.rank_scale.double(), q_r, b)
    scale = torch.where(s > 0, scaled / s.clamp_min(torch.finfo(s.dtype).tiny), torch.ones_like(s))
    cut = BiasedMF(p.shape[0], q.shape[0], rank, model.rank_user_embedding.embedding_dim, 0.0).to(p.device)
    cut.load_state_dict({**model.state_dict(),
                         "user_embedding.weight": _padded(p_basis @ a * root, rank),
                         "item_embedding.weight": _padded(q_basis @ b * root, rank),
                         "rank_scale": _padded(scale[None], rank, fill=1.0)[0]})
    return cut.train(model.training)


def _padded(columns: torch.Tensor, width: int, fill: float = 0.0) -> torch.Tensor:
    """``columns`` as float32, widened to ``width`` columns of ``fill``."""
    out = torch.full((columns.shape[0], width), fill, dtype=torch.float32, device=columns.device)
    out[:, :columns.shape[1]] = columns
    return out


class MFFamily(PairFamily):
    """Matrix factorisation, the first model of the introductory article."""

    name = "mf"
    config_type = MFConfig
    training_cost = 1.0
    untuned_reference_rmse = 0.66

    def build(self, config: MFConfig, n_users: int, n_items: int, global_mean: float) -> nn.Module:
        return BiasedMF(n_users, n_items, config.dim, config.rank_dim, global_mean)

    def all_items_core(self, model: nn.Module) -> nn.Module:
        return AllItemsMF(model)

    def rank(self, model: nn.Module) -> int:
        return model.user_embedding.embedding_dim

    def cut(self, model: nn.Module, rank: int) -> nn.Module:
        return cut_rank(model, rank)

    def trained_config(self, config: MFConfig, model: nn.Module) -> MFConfig:
        return replace(config, dim=self.rank(model))


register(MFFamily())
