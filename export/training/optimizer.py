"""The optimiser of every family: Adam for dense layers, and Adam or lazy row-wise Adam for embedding tables."""
from __future__ import annotations

import torch
from torch import nn

from .config import TrainingConfig
from .penalty import RowDecay
from .row_adam import RowAdam

SPARSE_EMBEDDING_PARAMETERS = 5_000_000
"""Embedding-table parameters (all tables together) above which ``sparse_embeddings=None``
trains tables row by row (``RowAdam``, see ``row_wise_tables``): MovieLens 100K and 1M stay
dense, 20M and up go row-wise."""


def row_wise_tables(tables: list[nn.Embedding], config: TrainingConfig, batch_size: int) -> list[nn.Embedding]:
    """The embedding tables that train row by row: all or none where ``config.sparse_embeddings``
    says so; when it is None, in a large catalogue (``SPARSE_EMBEDDING_PARAMETERS``) each table with
    more rows than a batch has ratings. A table with no more rows than that has most of them
    touched by every batch (the ranking head looks items up twice), and one fused update of the
    whole table costs less than gathering and writing back nearly all of its rows."""
    if config.sparse_embeddings is not None:
        return list(tables) if config.sparse_embeddings else []
    if sum(t.weight.numel() for t in tables) <= SPARSE_EMBEDDING_PARAMETERS:
        return []
    return [t for t in tables if t.num_embeddings > batch_size]


class Optimizer:
    """Adam for the dense layers (with ``weight_decay``) and, for the embedding tables, Adam on
    dense gradients or, for the large tables of large catalogues, ``RowAdam`` on the rows each
    batch touches (``row_wise_tables``): with dense gradients every step would update every row
    of every table. Once any table trains row-wise every table's gradient is computed sparse (the
    backward pass then only keeps each lookup's gradient); a table updated whole has it summed
    into a whole-table gradient by one ``index_add_``, which costs less than the dense backward
    of the embedding lookup (which sorts the ids). Adam is torch's fused implementation: one
    kernel over all parameters instead of a series of per-tensor operations. ``learning_rate`` is
    the step size for ``batch_size`` (``config.learning_rate_for``), ``weight_decay`` the dense
    layers' decay for the training set's size (``config.weight_decay_for``)."""

    def __init__(self, model: nn.Module, config: TrainingConfig, batch_size: int, learning_rate: float,
                 weight_decay: float) -> None:
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
        self.row_wise = row_wise_tables(tables, config, batch_size)
        self._row_wise_ids = {id(t) for t in self.row_wise}
        for table in tables:
            table.sparse = bool(self.row_wise)
        self.whole = [t for t in tables if id(t) not in self._row_wise_ids]
        table_ids = {id(m.weight) for m in tables}
        layers = [p for p in model.parameters() if id(p) not in table_ids]
        weights = [p for p in layers if p.dim() > 1]
        others = [p for p in layers if p.dim() <= 1]
        groups = [{"params": weights, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0},
                  {"params": [t.weight for t in self.whole], "weight_decay": 0.0}]
        self.rows = RowAdam(self.row_wise, lr=learning_rate) if self.row_wise else None
        groups = [g for g in groups if g["params"]]
        self.dense = torch.optim.Adam(groups, lr=learning_rate, fused=True) if groups else None
        self.tables = tables

    def set_learning_rate(self, learning_rate: float) -> None:
        """Step with ``learning_rate`` from the next step on (moments kept)."""
        self.learning_rate = learning_rate
        if self.rows is not None:
            self.rows.lr = learning_rate
        if self.dense is not None:
            for group in self.dense.param_groups:
                group["lr"] = learning_rate

    def zero_grad(self) -> None:
        """Drop every gradient (``set_to_none``, torch's default)."""
        for part in (self.rows, self.dense):
            if part is not None:
                part.zero_grad()

    def step(self, decays: list[RowDecay] = ()) -> None:
        """One update, with each of ``decays`` (the penalty's gradient) added to its table's gradient."""
        if self.rows is not None:
            self.rows.step([d for d in decays if id(d.table) in self._row_wise_ids])
        for table in self.whole:
            _sum_sparse_gradient(table.weight)
        _add_to_dense_gradients([d for d in decays if id(d.table) not in self._row_wise_ids])
        if self.dense is not None:
            self.dense.step()

    def release(self) -> None:
        """Give the embedding tables back their ordinary (dense-gradient) behaviour."""
        for table in self.tables:
            table.sparse = False


@torch.no_grad()
def _sum_sparse_gradient(weight: nn.Parameter) -> None:
    """Replace a sparse gradient of ``weight`` by the whole-table gradient it sums to."""
    grad = weight.grad
    if grad is not None and grad.is_sparse:
        weight.grad = torch.zeros_like(weight).index_add_(0, grad._indices()[0], grad._values())


@torch.no_grad()
def _add_to_dense_gradients(decays: list[RowDecay]) -> None:
    """Add each decay's ``scale * count_r * weight[r]`` to its table's whole-table gradient."""
    for decay in decays:
        weight = decay.table.weight
        counts = torch.bincount(decay.ids, minlength=weight.shape[0]).to(weight.dtype)
        penalty = counts[:, None] * decay.scale * weight
        weight.grad = penalty if weight.grad is None else weight.grad.add_(penalty)
