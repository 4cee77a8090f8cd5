"""Mini-batch training with early stopping: a function over a model, its data and a config."""
from __future__ import annotations

import copy
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from .config import TrainingConfig

log = logging.getLogger(__name__)

Inputs = tuple[torch.Tensor, ...]
Predict = Callable[[nn.Module, Inputs], torch.Tensor]
Penalty = Callable[[nn.Module, Inputs], tuple[torch.Tensor, torch.Tensor]]

EVAL_BATCH = 16_384


@dataclass
class FitResult:
    """What happened during a fit: per-epoch curves and the epoch whose weights were kept."""

    best_epoch: int = 0
    best_val_rmse: float = float("inf")
    epochs: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def predict_in_batches(model: nn.Module, predict: Predict, inputs: Inputs, batch: int = EVAL_BATCH) -> torch.Tensor:
    """Evaluate ``predict`` over ``inputs`` without gradients, in slices of ``batch`` rows."""
    model.eval()
    with torch.no_grad():
        n = inputs[0].shape[0]
        return torch.cat([predict(model, tuple(x[i:i + batch] for x in inputs)) for i in range(0, n, batch)]) \
            if n else torch.empty(0)


def rmse_unit(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """RMSE on the [0, 1] scale of predictions clipped to that scale."""
    return float(torch.sqrt(torch.mean((predicted.clamp(0, 1) - target) ** 2)))


def _optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    dense = [p for n, p in model.named_parameters() if "embedding" not in n and "bias." not in n
             and p.dim() > 1]
    dense_ids = {id(p) for p in dense}
    rest = [p for p in model.parameters() if id(p) not in dense_ids]
    return torch.optim.Adam([{"params": dense, "weight_decay": config.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=config.learning_rate)


@dataclass(frozen=True)
class Objective:
    """What the loss is made of for one family."""

    predict: Predict
    """Rating scores [B] of a batch."""
    rank: Predict
    """Ranking logits [B] of a batch."""
    penalty: Penalty
    with_items: Callable[[Inputs, torch.Tensor], Inputs]
    """The batch with its items replaced (sampled negatives for the ranking head)."""
    n_items: int


def batch_loss(model: nn.Module, objective: Objective, batch: Inputs, targets: torch.Tensor,
               config: TrainingConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Total loss and the rating MSE of one mini-batch."""
    mse = torch.mean((objective.predict(model, batch) - targets) ** 2)
    embedding_l2, bias_l2 = objective.penalty(model, batch)
    loss = mse + config.embedding_decay * embedding_l2 + config.bias_decay * bias_l2
    if config.rank_weight:
        negatives = objective.with_items(batch, torch.randint(0, objective.n_items, targets.shape,
                                                              generator=generator))
        logits = torch.cat([objective.rank(model, batch), objective.rank(model, negatives)])
        labels = torch.cat([torch.ones_like(targets), torch.zeros_like(targets)])
        loss = loss + config.rank_weight * nn.functional.binary_cross_entropy_with_logits(logits, labels)
    return loss, mse


def fit(model: nn.Module, objective: Objective,
        train: tuple[Inputs, torch.Tensor], validation: tuple[Inputs, torch.Tensor],
        config: TrainingConfig, generator: torch.Generator, name: str) -> FitResult:
    """Fit ``model`` by MSE on [0, 1] targets plus the ranking loss; keep the weights of the
    epoch with the best validation RMSE.

    ``penalty`` returns the L2 terms of the embedding rows and the biases a batch touches,
    weighted here by ``config.embedding_decay`` and ``config.bias_decay``.
    """
    inputs, targets = train
    optimizer = _optimizer(model, config)
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    started = time.perf_counter()
    n = targets.shape[0]
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        total, seen = 0.0, 0
        batches = range(0, n, config.batch_size)
        out_of_time = False
        for start in tqdm(batches, desc=f"{name} epoch {epoch}", leave=False, unit="batch",
                          disable=not sys.stderr.isatty()):
            if config.time_budget_s is not None and time.perf_counter() - started > config.time_budget_s:
                out_of_time = True
                break
            index = order[start:start + config.batch_size]
            batch = tuple(x[index] for x in inputs)
            loss, mse = batch_loss(model, objective, batch, targets[index], config, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(mse.detach()) * len(index)
            seen += len(index)
        val_rmse = rmse_unit(predict_in_batches(model, objective.predict, validation[0]), validation[1])
        seen = max(seen, 1)
        result.epochs.append({"epoch": epoch, "train_mse": total / seen, "train_rmse": (total / seen) ** 0.5,
                              "validation_rmse": val_rmse})
        improved = val_rmse < result.best_val_rmse
        log.info("%s epoch %2d: train RMSE %.4f, validation RMSE %.4f (0-1 scale)%s",
                 name, epoch, (total / seen) ** 0.5, val_rmse, " *" if improved else "")
        if improved:
            result.best_epoch, result.best_val_rmse = epoch, val_rmse
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - result.best_epoch >= config.patience:
            break
        if out_of_time:
            log.info("%s: time budget of %.0f s reached during epoch %d (%d of %d ratings seen)",
                     name, config.time_budget_s, epoch, seen, n)
            break
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    log.info("%s: best epoch %d of %d, validation RMSE %.4f, %.1f s", name, result.best_epoch,
             len(result.epochs), result.best_val_rmse, result.seconds)
    return result
