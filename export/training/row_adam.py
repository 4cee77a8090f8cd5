"""Lazy Adam for embedding tables: each step updates only the rows the batch looked up."""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.adam import adam

from .penalty import RowDecay


class RowAdam:
    """Adam on the rows of embedding tables that a step's sparse gradients touch; rows a batch
    does not touch keep their weights and moments (the semantics of torch's ``SparseAdam``).

    Each step finds the touched rows by marking a boolean per table row (no sort), sums repeated
    lookups with one ``index_add_``, gathers the rows' weights and moments, updates them with
    torch's fused Adam kernel (all tables in one call) and writes them back. ``SparseAdam``
    instead coalesces each gradient and builds several sparse tensors per step, and a sequence
    of separate operations on the gathered rows costs about twice the fused kernel's passes over
    memory. The step is torch's ``Adam``'s, whose ``eps`` is added after the bias correction
    (``SparseAdam`` adds it before; the two differ only where a row's gradient is about ``eps``).
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
    def step(self, decays: list[RowDecay] = ()) -> None:
        """One update; each of ``decays`` adds ``scale * count_r * weight[r]`` to the gradient of
        the rows its ids name (and marks them touched)."""
        by_table = {id(d.table): d for d in decays}
        self.steps += 1
        touched, weights, grads, means, squares = [], [], [], [], []
        for table, (mean, square) in zip(self.tables, self.moments):
            grad, decay = table.weight.grad, by_table.get(id(table))
            if grad is None and decay is None:
                continue
            rows, summed = _touched_rows(grad, table.weight, decay)
            touched.append((table.weight, mean, square, rows))
            weights.append(table.weight.index_select(0, rows))
            grads.append(summed)
            means.append(mean.index_select(0, rows))
            squares.append(square.index_select(0, rows))
        if not touched:
            return
        # every table steps together: the kernel counts from the step before this one
        steps = [torch.tensor(float(self.steps - 1), device=w.device) for w in weights]
        beta1, beta2 = self.betas
        adam(weights, grads, means, squares, [], steps, fused=True, amsgrad=False, has_complex=False,
             beta1=beta1, beta2=beta2, lr=self.lr, weight_decay=0.0, eps=self.eps, maximize=False)
        for (weight, mean, square, rows), new_weight, new_mean, new_square in zip(touched, weights, means, squares):
            weight.index_copy_(0, rows, new_weight)
            mean.index_copy_(0, rows, new_mean)
            square.index_copy_(0, rows, new_square)


def _touched_rows(grad: torch.Tensor | None, weight: torch.Tensor,
                  decay: RowDecay | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of a sparse (uncoalesced) gradient and of ``decay``'s ids, ascending, and
    each row's summed gradient (the decay's added)."""
    n_rows = weight.shape[0]
    if grad is None:
        indices, values = weight.new_empty(0, dtype=torch.int64), weight.new_empty((0, weight.shape[1]))
    else:
        indices, values = grad._indices()[0], grad._values()
    marked = torch.zeros(n_rows, dtype=torch.bool, device=indices.device)
    marked[indices] = True
    if decay is not None:
        marked[decay.ids] = True
    rows = marked.nonzero()[:, 0]
    position = torch.empty(n_rows, dtype=torch.int64, device=indices.device)
    position[rows] = torch.arange(rows.shape[0], device=indices.device)
    summed = torch.zeros((rows.shape[0], values.shape[1]), dtype=values.dtype, device=values.device)
    summed.index_add_(0, position[indices], values)
    if decay is not None:
        counts = torch.zeros(rows.shape[0], dtype=values.dtype, device=values.device)
        counts.index_add_(0, position[decay.ids], torch.ones_like(decay.ids, dtype=values.dtype))
        summed.addcmul_(weight.index_select(0, rows), counts[:, None] * decay.scale)
    return rows, summed
