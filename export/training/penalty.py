"""The L2 penalty on the embedding rows and biases a mini-batch touches, added as its exact gradient.

The penalty is ``embedding_decay * mean_b sum_t ||T[ids_b]||^2`` over a family's ``user_tables``
and ``item_tables``, plus ``bias_decay`` times the same over its ``bias_tables``. Its gradient for
row ``r`` of table ``T`` is ``2 * decay * count_r / B * T[r]``, ``count_r`` being how often the
batch's ids name ``r``: the optimizer adds that to the row's gradient, with no second lookup of
every row and no autograd pass through it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..models.base import Family, Inputs
from .config import TrainingConfig


@dataclass(frozen=True)
class PenaltyTerm:
    """One penalised table: which of the batch's ids index it, and its decay."""

    table: nn.Embedding
    by_items: bool
    """Indexed by the batch's items (else its users), as ``Family.penalty_ids`` gives them."""
    decay: float


@dataclass(frozen=True)
class RowDecay:
    """One step's penalty gradient for a table: ``scale * count_r * T[r]`` for each of ``ids``."""

    table: nn.Embedding
    ids: torch.Tensor
    scale: float


def penalty_terms(model: nn.Module, family: Family, config: TrainingConfig) -> list[PenaltyTerm]:
    """The tables ``family`` penalises in ``model``, with non-zero decays."""
    user_bias, item_bias = family.bias_tables
    named = [(t, False, config.embedding_decay) for t in family.user_tables] \
        + [(t, True, config.embedding_decay) for t in family.item_tables] \
        + [(user_bias, False, config.bias_decay), (item_bias, True, config.bias_decay)]
    return [PenaltyTerm(getattr(model, name), by_items, decay) for name, by_items, decay in named if decay]


def row_decays(terms: list[PenaltyTerm], family: Family, batch: Inputs) -> list[RowDecay]:
    """This batch's penalty gradients, for ``Optimizer.step``."""
    users, items = family.penalty_ids(batch)
    return [RowDecay(t.table, items if t.by_items else users, 2.0 * t.decay / users.shape[0]) for t in terms]

