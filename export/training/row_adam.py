"""Lazy Adam for embedding tables: each step updates only the rows the batch looked up."""
from __future__ import annotations

import torch
from torch import nn


class RowAdam:
    """Adam on the rows of embedding tables that a step's sparse gradients touch; rows a batch
    does not touch keep their weights and moments (the semantics of torch's ``SparseAdam``).

    The work per step is a few whole-tensor operations per table on the touched rows: the rows are
    found by marking a boolean per table row (no sort), repeated lookups are summed with one
    ``index_add_``, and the moments are read and written back with ``index_select`` and
    ``index_copy_``. ``SparseAdam`` instead coalesces each gradient and builds several sparse
    tensors per step.
    """

    def __init__(self, tables: list[nn.Embedding], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.tables = tables
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.steps = 0
        self.moments = [(torch.zeros_like(t.weight), torch.zeros_like(t.weight)) for t in tables]

    def zero_grad(self) -> None:
        for table in self.tables:
            table.weight.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        step_size = self.lr * (1 - beta2 ** self.steps) ** 0.5 / (1 - beta1 ** self.steps)
        for table, (mean, square) in zip(self.tables, self.moments):
            grad = table.weight.grad
            if grad is None:
                continue
            rows, summed = _touched_rows(grad, table.weight.shape[0])
            mean_rows = mean.index_select(0, rows).lerp_(summed, 1 - beta1)
            square_rows = square.index_select(0, rows).mul_(beta2).addcmul_(summed, summed, value=1 - beta2)
            mean.index_copy_(0, rows, mean_rows)
            square.index_copy_(0, rows, square_rows)
            table.weight.index_add_(0, rows, mean_rows / square_rows.sqrt_().add_(self.eps), alpha=-step_size)


def _touched_rows(grad: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of a sparse (uncoalesced) gradient, ascending, and each row's summed gradient."""
    indices, values = grad._indices()[0], grad._values()
    marked = torch.zeros(n_rows, dtype=torch.bool, device=indices.device)
    marked[indices] = True
    rows = marked.nonzero()[:, 0]
    position = torch.empty(n_rows, dtype=torch.int64, device=indices.device)
    position[rows] = torch.arange(rows.shape[0], device=indices.device)
    summed = torch.zeros((rows.shape[0], values.shape[1]), dtype=values.dtype, device=values.device)
    return rows, summed.index_add_(0, position[indices], values)
