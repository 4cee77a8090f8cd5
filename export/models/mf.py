"""Matrix factorisation: user and item embeddings, dot product, plus a global mean and biases."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..training.config import TrainingConfig
from .base import PairFamily, RankingBlocks
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
        pq = self.user_embedding(users) * self.item_embedding(items)
        return self._rating(users, items, pq), self._logit(users, items, pq)

    def with_sampled(self, users: torch.Tensor, items: torch.Tensor,
                     sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward`` and the ranking logit [B] of ``sampled`` items, with each product formed once:
        ``p * q`` serves the rating and the rated items' ranking logit (``(p * q) @ s`` is
        ``<p * s, q>``), and the ranking head's item tables are looked up once for rated and sampled
        items together, so that each has one gradient to sum, not two."""
        p = self.user_embedding(users)
        pq = p * self.item_embedding(items)
        n = items.shape[0]
        both = torch.cat([items, sampled])
        rank_bias = self.rank_item_bias(both)[:, 0].split(n)
        rank_items = self.rank_item_embedding(both).split(n)
        rank_user = self.rank_user_embedding(users)
        sampled_pq = p.detach() * self.item_embedding.weight.detach().index_select(0, sampled)
        return (self._rating(users, items, pq),
                rank_bias[0] + self._ranked(pq) + (rank_user * rank_items[0]).sum(-1),
                rank_bias[1] + self._ranked(sampled_pq) + (rank_user * rank_items[1]).sum(-1))

    def with_negatives(self, users: torch.Tensor, items: torch.Tensor,
                       negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unit ratings and logits [B] of ``items`` and of ``negatives`` for ``users``: ``forward``
        of both, each user's rows looked up once."""
        p, rank_user, user_bias = self.user_embedding(users), self.rank_user_embedding(users), self.user_bias(users)[:, 0]
        out = []
        for chosen in (items, negatives):
            pq = p * self.item_embedding(chosen)
            out.append((self.global_mean + user_bias + self.item_bias(chosen)[:, 0] + pq.sum(-1),
                        self.rank_item_bias(chosen)[:, 0] + self._ranked(pq)
                        + (rank_user * self.rank_item_embedding(chosen)).sum(-1)))
        return out[0][0], out[1][0], out[0][1], out[1][1]

    def ranking_logit(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The ranking head alone: logit [B]."""
        return self._logit(users, items, self.user_embedding(users) * self.item_embedding(items))

    def ranking_user(self, users: torch.Tensor) -> torch.Tensor:
        """The users' side of the ranking head, ``[p_u * s, r_u]`` [B, dim + rank_dim], the rating
        factors read detached."""
        return torch.cat([self.user_embedding(users).detach() * self.rank_scale, self.rank_user_embedding(users)], 1)

    def ranking_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The items' side of the ranking head, ``[q, t]`` [n_items, dim + rank_dim], and its
        offsets ``c`` [n_items]: the logit is ``ranking_user(u) @ [q, t]^T + c``."""
        return (torch.cat([self.item_embedding.weight.detach(), self.rank_item_embedding.weight], 1),
                self.rank_item_bias.weight[:, 0])

    def ranking_blocks(self) -> RankingBlocks:
        """The head's blocks: its own ``r``, ``t``, ``c`` and ``s``, reading ``p``, ``q``."""
        return RankingBlocks(self.rank_user_embedding.weight, self.rank_item_embedding.weight,
                             self.rank_item_bias.weight[:, 0], self.rank_scale,
                             self.user_embedding.weight.detach(), self.item_embedding.weight.detach())

    def _rating(self, users: torch.Tensor, items: torch.Tensor, pq: torch.Tensor) -> torch.Tensor:
        return self.global_mean + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0] + pq.sum(-1)

    def _logit(self, users: torch.Tensor, items: torch.Tensor, pq: torch.Tensor) -> torch.Tensor:
        return (self.rank_item_bias(items)[:, 0] + self._ranked(pq)
                + (self.rank_user_embedding(users) * self.rank_item_embedding(items)).sum(-1))

    def _ranked(self, pq: torch.Tensor) -> torch.Tensor:
        """``<p * s, q>`` from ``p * q`` [B, dim], read detached: learning to rank moves ``s``, never
        the rating factors."""
        return pq.detach() @ self.rank_scale


class AllItemsMF(nn.Module):
    """``mean + b_u + b_i + P[u] @ Q^T`` and ``c + (P[u] * s) @ Q^T + R[u] @ T^T`` for every item."""

    def __init__(self, model: BiasedMF) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            items, offsets = model.ranking_items()
            self.register_buffer("rank_items", items.contiguous())
            self.register_buffer("rank_offsets", offsets.contiguous())

    def forward(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        p = m.user_embedding(users)
        unit = p @ m.item_embedding.weight.T + m.user_bias(users) + m.item_bias.weight[:, 0] + m.global_mean
        return unit, self.ranking(users)

    def ranking(self, users: torch.Tensor) -> torch.Tensor:
        """Both ranking products in one: ``[p * s, r] @ [q, t]^T + c``."""
        return self.model.ranking_user(users) @ self.rank_items.T + self.rank_offsets


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
