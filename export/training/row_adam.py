"""Lazy Adam for embedding tables: each step updates only the rows the batch looked up."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.adam import adam

from .penalty import RowDecay


class RowAdam:
    """Adam on the rows of embedding tables that a step's sparse gradients touch; rows a batch
    does not touch keep their weights and moments (the semantics of torch's ``SparseAdam``).

    Each step finds the touched rows by marking a boolean per table row (no sort; once for all
    the tables looked up by the same ids), sums repeated lookups with one ``index_add_``, gathers
    the rows' weights and moments, updates them with torch's fused Adam kernel (all tables in one
    call) and writes them back. ``SparseAdam`` instead coalesces each gradient and builds several
    sparse tensors per step, and a sequence of separate operations on the gathered rows costs
    about twice the fused kernel's passes over memory. The step is torch's ``Adam``'s, whose
    ``eps`` is added after the bias correction (``SparseAdam`` adds it before; the two differ only
    where a row's gradient is about ``eps``).
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
        found = _FoundRows()
        touched, weights, grads, means, squares = [], [], [], [], []
        for table, (mean, square) in zip(self.tables, self.moments):
            weight, decay = table.weight, by_table.get(id(table))
            if weight.grad is None and decay is None:
                continue
            indices, values = _lookups(weight)
            rows, penalty_slots = found.get(weight.shape[0], indices, None if decay is None else decay.ids)
            gathered = weight.index_select(0, rows.rows)
            summed = torch.zeros_like(gathered).index_add_(0, rows.lookup_slots, values)
            if decay is not None:
                counts = torch.bincount(penalty_slots, minlength=rows.rows.shape[0]).to(summed.dtype)
                summed.addcmul_(gathered, counts[:, None] * decay.scale)
            touched.append((weight, mean, square, rows.rows))
            weights.append(gathered)
            grads.append(summed)
            means.append(mean.index_select(0, rows.rows))
            squares.append(square.index_select(0, rows.rows))
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


@dataclass(frozen=True)
class TouchedRows:
    """The distinct rows of a table that a step's lookups (and other ids) name."""

    rows: torch.Tensor
    """The distinct rows, ascending, int64 [R]."""
    lookup_slots: torch.Tensor
    """Each lookup's position in ``rows``, int64 [L]."""
    other_slots: torch.Tensor | None
    """Each of the other ids' position in ``rows``; None without them."""


def _touched_rows(n_rows: int, indices: torch.Tensor, other_ids: torch.Tensor | None) -> TouchedRows:
    """The distinct rows among ``indices`` (a gradient's lookups) and ``other_ids`` (a penalty's)
    in a table of ``n_rows``, found by marking a boolean per row (no sort)."""
    marked = torch.zeros(n_rows, dtype=torch.bool, device=indices.device)
    marked.index_fill_(0, indices, True)
    if other_ids is not None:
        marked.index_fill_(0, other_ids, True)
    rows = marked.nonzero()[:, 0]
    position = torch.empty(n_rows, dtype=torch.int64, device=indices.device)
    position[rows] = torch.arange(rows.shape[0], device=indices.device)
    return TouchedRows(rows, position.index_select(0, indices),
                       None if other_ids is None else position.index_select(0, other_ids))


class _FoundRows:
    """The touched rows found so far in one step: the tables a family looks up by the same ids (a
    user's embedding, bias and ranking factors) have theirs found once, whether or not a penalty
    names those same ids."""

    def __init__(self) -> None:
        self.found: list[tuple[int, torch.Tensor, torch.Tensor | None, TouchedRows]] = []

    def get(self, n_rows: int, indices: torch.Tensor,
            penalty_ids: torch.Tensor | None) -> tuple[TouchedRows, torch.Tensor | None]:
        """The rows that ``indices`` and ``penalty_ids`` touch, and the penalty ids' slots among them."""
        other_ids = None if penalty_ids is None or _same(penalty_ids, indices) else penalty_ids
        rows = next((rows for found_n_rows, found_indices, found_other_ids, rows in self.found
                     if found_n_rows == n_rows and _same(found_indices, indices) and _same(found_other_ids, other_ids)),
                    None)
        if rows is None:
            rows = _touched_rows(n_rows, indices, other_ids)
            self.found.append((n_rows, indices, other_ids, rows))
        if penalty_ids is None:
            return rows, None
        return rows, rows.lookup_slots if other_ids is None else rows.other_slots


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Whether two id tensors (or two Nones) hold the same ids."""
    if a is None or b is None:
        return a is b
    return a is b or (a.shape == b.shape and torch.equal(a, b))


def _lookups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The looked-up ids and gradient rows of ``weight``'s sparse (uncoalesced) gradient; none without one."""
    if weight.grad is None:
        return weight.new_empty(0, dtype=torch.int64), weight.new_empty((0, weight.shape[1]))
    return weight.grad._indices()[0], weight.grad._values()
