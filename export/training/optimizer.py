"""The optimiser of every family: Adam for dense layers, and Adam or lazy row-wise Adam for embedding tables."""
from __future__ import annotations

import torch
from torch import nn

from .config import TrainingConfig
from .penalty import RowDecay
from .row_adam import RowAdam

SPARSE_EMBEDDING_PARAMETERS = 5_000_000
"""Embedding-table parameters (all tables together) above which ``sparse_embeddings=None``
trains them row by row (``RowAdam``): MovieLens 100K and 1M stay dense, 20M and up go sparse."""


class Optimizer:
    """Adam for the dense layers (with ``weight_decay``) and, for the embedding tables, Adam on
    dense gradients or, for large catalogues, ``RowAdam`` on the rows each batch touches: with
    dense gradients every step would update every row of every table. Adam is torch's fused
    implementation: one kernel over all parameters instead of a series of per-tensor operations.
    ``learning_rate`` is the step size for ``batch_size`` (``config.learning_rate_for``)."""

    def __init__(self, model: nn.Module, config: TrainingConfig, batch_size: int, learning_rate: float) -> None:
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
        size = sum(m.weight.numel() for m in tables)
        self.sparse = config.sparse_embeddings if config.sparse_embeddings is not None \
            else size > SPARSE_EMBEDDING_PARAMETERS
        for table in tables:
            table.sparse = self.sparse
        table_ids = {id(m.weight) for m in tables}
        layers = [p for p in model.parameters() if id(p) not in table_ids]
        weights = [p for p in layers if p.dim() > 1]
        others = [p for p in layers if p.dim() <= 1]
        groups = [{"params": weights, "weight_decay": config.weight_decay}, {"params": others, "weight_decay": 0.0}]
        self.rows = RowAdam(tables, lr=learning_rate) if self.sparse else None
        if not self.sparse:
            groups.append({"params": [m.weight for m in tables], "weight_decay": 0.0})
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
            self.rows.step(decays)
        else:
            _add_to_dense_gradients(decays)
        if self.dense is not None:
            self.dense.step()

    def release(self) -> None:
        """Give the embedding tables back their ordinary (dense-gradient) behaviour."""
        for table in self.tables:
            table.sparse = False


@torch.no_grad()
def _add_to_dense_gradients(decays: list[RowDecay]) -> None:
    """Add each decay's ``scale * count_r * weight[r]`` to its table's whole-table gradient."""
    for decay in decays:
        weight = decay.table.weight
        counts = torch.bincount(decay.ids, minlength=weight.shape[0]).to(weight.dtype)
        penalty = counts[:, None] * decay.scale * weight
        weight.grad = penalty if weight.grad is None else weight.grad.add_(penalty)
