"""A model's predictions over held-out pairs, without gradients, and their RMSE on [0, 1]."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models.base import Family, Inputs

Predict = Callable[[nn.Module, Inputs], torch.Tensor]

EVAL_BATCH = 16_384
"""Pairs per forward pass when predicting without gradients."""


def predict_in_batches(model: nn.Module, predict: Predict, inputs: Inputs, batch: int = EVAL_BATCH) -> torch.Tensor:
    """Evaluate ``predict`` over ``inputs`` (on the model's device) without gradients, in slices
    of ``batch`` rows; the result is on the CPU."""
    model.eval()
    with torch.no_grad():
        n = inputs[0].shape[0]
        return torch.cat([predict(model, tuple(x[i:i + batch] for x in inputs)).cpu() for i in range(0, n, batch)]) \
            if n else torch.empty(0)


def rmse_unit(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """RMSE on the [0, 1] scale of predictions clipped to that scale."""
    return float(torch.sqrt(torch.mean((predicted.detach().clamp(0, 1) - target) ** 2)))


def validation_rmse(model: nn.Module, family: Family, validation: tuple[Inputs, torch.Tensor]) -> float:
    """RMSE on [0, 1] of ``model``'s predictions for the validation pairs."""
    return rmse_unit(predict_in_batches(model, family.predict, validation[0]), validation[1])
