"""One pass over the training ratings: the loss of a mini-batch, the epoch's steps, and its entry
in a learning curve."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from ..models.base import Family, Inputs, TrainingRows
from .batches import epoch_order
from .config import TrainingConfig, batch_size_for, learning_rate_for, user_chunk_for, weight_decay_for
from .heap import TRIM_EVERY_STEPS, release_free_memory
from .optimizer import Optimizer
from .penalty import PenaltyTerm, row_decays

PROGRESS_BARS = True
"""Show a progress bar per epoch when stderr is a terminal (worker processes turn it off)."""


@dataclass(frozen=True)
class Objective:
    """What the loss is made of: the family's outputs and ranking head, and the catalogue that
    unrated items are sampled from. The L2 penalty is added by the optimizer (``penalty``)."""

    family: Family
    n_items: int


def batch_loss(model: nn.Module, objective: Objective, batch: Inputs, targets: torch.Tensor,
               config: TrainingConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Total loss (rating MSE and ranking loss; the L2 penalty's gradient is the optimizer's) and
    the rating MSE of one mini-batch (over its rows and, with ``negative_targets``, as many
    sampled non-interactions)."""
    family = objective.family
    if not config.rank_weight and not config.negative_targets:
        mse = torch.mean((family.outputs(model, batch)[0] - targets) ** 2)
        return mse, mse
    sampled = torch.randint(0, objective.n_items, (config.rank_negatives, *targets.shape),
                            generator=generator).to(targets.device)
    if config.negative_targets:   # the first sampled item a non-interaction, its rating output pulled to 0
        unit, negative, rated_logits, sampled_logits = family.negative_outputs(model, batch, sampled[0])
        mse = (torch.mean((unit - targets) ** 2) + torch.mean(negative ** 2)) / 2
    else:
        unit, rated_logits, sampled_logits = family.sampled_outputs(model, batch, sampled[0])
        mse = torch.mean((unit - targets) ** 2)
    if not config.rank_weight:
        return mse, mse
    more = [family.logits(model, family.with_items(batch, items)) for items in sampled[1:]]
    logits = torch.stack([rated_logits, sampled_logits, *more], dim=1)   # the rated item first
    picked = nn.functional.cross_entropy(logits, torch.zeros_like(targets, dtype=torch.long), reduction="none")
    liked = (targets >= config.rank_positive_min).to(picked.dtype)
    return mse + config.rank_weight * (picked * liked).sum() / liked.sum().clamp_min(1), mse


def train_epoch(model: nn.Module, objective: Objective, train: tuple[TrainingRows, torch.Tensor],
                 optimizer: Optimizer, penalty: list[PenaltyTerm], config: TrainingConfig,
                 generator: torch.Generator, desc: str, deadline: float | None) -> tuple[float, int, bool]:
    """One shuffled pass in mini-batches of ``optimizer.batch_size``: summed rating MSE, ratings
    seen, whether time ran out."""
    rows, targets = train
    model.train()
    chunk = user_chunk_for(config, optimizer.batch_size)
    order = epoch_order(rows.users, chunk, generator)
    total, seen = 0.0, 0
    batch_size = optimizer.batch_size
    for step, start in enumerate(tqdm(range(0, len(order), batch_size), desc=desc, leave=False, unit="batch",
                                      disable=not (PROGRESS_BARS and sys.stderr.isatty()))):
        if step % TRIM_EVERY_STEPS == TRIM_EVERY_STEPS - 1:
            release_free_memory()
        if deadline is not None and time.perf_counter() > deadline:
            return total, seen, True
        index = order[start:start + batch_size].to(targets.device)
        batch = rows.batch(index)
        loss, mse = batch_loss(model, objective, batch, targets[index], config, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step(row_decays(penalty, objective.family, batch))
        total += float(mse.detach()) * len(index)
        seen += len(index)
    return total, seen, False


def curve_entry(epoch: int, total: float, seen: int, seconds: float, learning_rate: float,
                 embedding_decay: float, rank: int | None) -> dict[str, float]:
    """One epoch of a learning curve, from its summed rating MSE over ``seen`` ratings; ``rank``:
    of the rating factors it trained (``Family.rank``), left out for a family without one."""
    mse = total / max(seen, 1)
    entry = {"epoch": epoch, "train_mse": mse, "train_rmse": mse ** 0.5, "ratings": seen,
             "train_seconds": seconds, "learning_rate": learning_rate, "embedding_decay": embedding_decay}
    return entry if rank is None else {**entry, "rank": rank}


def optimizer_for(model: nn.Module, config: TrainingConfig, n_ratings: int) -> Optimizer:
    """The optimizer for ``n_ratings`` training ratings, at its batch size, learning rate and weight decay."""
    batch_size = batch_size_for(config, n_ratings)
    return Optimizer(model, config, batch_size, learning_rate_for(config, batch_size),
                     weight_decay_for(config, n_ratings))
