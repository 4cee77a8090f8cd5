"""Choosing the rank of a family's rating factors (``TrainingConfig.rank_cut``) on the validation split."""
from __future__ import annotations

import torch
from torch import nn

from ..models.base import Family, Inputs
from .validation import validation_rmse


def smallest_cut(model: nn.Module, family: Family, validation: tuple[Inputs, torch.Tensor],
                 limit: float) -> tuple[nn.Module, float] | None:
    """The cut of ``model`` (``Family.cut``) of the smallest rank whose validation RMSE is at most
    ``limit``, and that RMSE, found by bisection over the ranks below ``model``'s (validation RMSE
    falls as the rank grows; where it does not, the cut found still meets ``limit``); None if no
    smaller rank does."""
    low, high, found = 1, family.rank(model), None
    while low < high:
        middle = (low + high) // 2
        candidate = family.cut(model, middle)
        rmse = validation_rmse(candidate, family, validation)
        if rmse <= limit:
            high, found = middle, (candidate, rmse)
        else:
            low = middle + 1
    return found


def cut_within(model: nn.Module, family: Family, validation: tuple[Inputs, torch.Tensor], best_rmse: float,
               min_improvement: float) -> tuple[nn.Module, dict[str, float]] | None:
    """``model`` (whose validation RMSE is ``best_rmse``) cut to the smallest rank within
    ``min_improvement`` of that RMSE, and the cut's record (ranks from and to, validation RMSE
    before and after); None for a family without a rank, where no smaller rank is as good, or
    where rank 1 is: then the factors carry nothing the validation split can tell from one
    direction, as before a model has learned them (the dense net's first epochs on a small
    catalogue rate by the biases alone), and a cut would fix the rank before it is known."""
    if family.rank(model) is None:
        return None
    found = smallest_cut(model, family, validation, best_rmse * (1.0 + min_improvement))
    if found is None or family.rank(found[0]) == 1:
        return None
    cut, rmse = found
    return cut, {"from_rank": family.rank(model), "to_rank": family.rank(cut), "validation_rmse_before": best_rmse,
                 "validation_rmse_after": rmse}
