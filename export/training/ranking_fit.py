"""The ranking fit: after the rating fit, the ranking head's own parameters trained alone for
top-N lists, with early stopping on validation NDCG@10.

The objective is a softmax over the catalogue (over a uniform sample of it, for a large one) of
each rated item against every other, weighted by the rating on [0, 1]: a multinomial likelihood
of what each user rates, and rates highly, among all items, which is what a top-N list is. The
rating loss's sampled ranking term (``TrainingConfig.rank_weight``) stays as a regulariser of
the rating fit; this fit starts from the head it left and moves the head only, so that ratings
are unchanged.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..data.dataset import Interactions
from ..models.base import Family
from .config import TrainingConfig, batch_size_for, learning_rate_for
from .ranking_metric import ndcg_of

log = logging.getLogger(__name__)

SCORE_CHUNK = 1024
"""Users scored at a time for the validation figure."""


@dataclass
class RankingFitResult:
    """What the ranking fit did: per-epoch figures and the epoch whose weights were kept (0: none
    beat the head the rating fit left)."""

    best_epoch: int = 0
    best_ndcg: float = float("nan")
    initial_ndcg: float = float("nan")
    """The validation NDCG@10 of the head before the ranking fit."""
    epochs: list[dict[str, float]] = field(default_factory=list)
    refit_epochs: int = 0
    """Epochs over training and validation ratings after the fit (the best epoch's count)."""
    candidates: int = 0
    """Items each softmax ran over (the catalogue, or ``rank_candidates`` sampled)."""
    seconds: float = 0.0
    out_of_time: bool = False

    def to_dict(self) -> dict:
        def figure(value: float) -> float | None:
            return None if np.isnan(value) else value
        return {"best_epoch": self.best_epoch, "validation_ndcg_at_10": figure(self.best_ndcg),
                "initial_validation_ndcg_at_10": figure(self.initial_ndcg), "epochs": self.epochs,
                "refit_epochs": self.refit_epochs, "candidates": self.candidates, "seconds": self.seconds,
                "out_of_time": self.out_of_time}


@dataclass(frozen=True)
class _Positives:
    """The rated pairs the softmax learns, with their weights (ratings on [0, 1]; zero left out)."""

    users: torch.Tensor
    items: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def of(cls, ratings: Interactions) -> "_Positives":
        unit = ratings.unit
        keep = np.flatnonzero(unit > 0)
        return cls(torch.as_tensor(ratings.users[keep]), torch.as_tensor(ratings.items[keep]),
                   torch.as_tensor(unit[keep], dtype=torch.float32))

    def batch(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        return tuple(x[index].to(device) for x in (self.users, self.items, self.weights))


def ranking_state(model: nn.Module, family: Family) -> dict[str, torch.Tensor]:
    """A copy of the ranking head's own parameters."""
    return {name: p.detach().clone() for name, p in family.ranking_parameters(model).items()}


def fits_ranking(model: nn.Module, family: Family, config: TrainingConfig) -> bool:
    """Whether the ranking fit applies: asked for, and the module's head is a product with
    parameters of its own."""
    if not config.rank_fit_patience or not family.ranking_fit_parameters(model):
        return False
    with torch.no_grad():
        return family.ranking_factors(model, torch.zeros(1, dtype=torch.long, device=_device(model))) is not None


def fit_ranking(model: nn.Module, family: Family, train: Interactions, validation: Interactions,
                config: TrainingConfig, generator: torch.Generator, name: str) -> RankingFitResult:
    """Train ``model``'s ranking head on ``train`` until ``config.rank_fit_patience`` epochs bring
    no better NDCG@10 on ``validation`` (relevant: ``config.rank_relevant_min`` and up; seen: ``train``);
    ``model`` keeps the best epoch's head (the one it had, if none is better)."""
    started = time.perf_counter()
    result = RankingFitResult(candidates=min(config.rank_candidates, _n_items(model, family)))
    measure = _validation_measure(model, family, train, validation, config, generator)
    result.initial_ndcg = result.best_ndcg = measure()
    if np.isnan(result.initial_ndcg):
        log.info("%s: no validation rating counts as relevant; the ranking head stays as the rating fit left it", name)
        return result
    best = ranking_state(model, family)
    family.restart_ranking(model, generator)
    deadline = None if config.time_budget_s is None else started + config.time_budget_s
    positives = _Positives.of(train)
    optimizer, batch_size = _optimizer(model, family, config, len(positives.users))
    since_best, fit_best = 0, float("-inf")   # patience counts from the fit's own best, the head it started from aside
    for epoch in range(1, config.max_epochs + 1):
        epoch_started = time.perf_counter()
        loss, result.out_of_time = _epoch(model, family, positives, optimizer, batch_size, config, generator,
                                          deadline)
        ndcg = measure()
        result.epochs.append({"epoch": epoch, "train_loss": loss, "validation_ndcg_at_10": ndcg,
                              "train_seconds": time.perf_counter() - epoch_started})
        improved = ndcg > result.best_ndcg
        log.info("%s ranking epoch %2d: loss %.4f, validation NDCG@10 %.4f%s", name, epoch, loss, ndcg,
                 " *" if improved else "")
        if improved:
            result.best_epoch, result.best_ndcg, best = epoch, ndcg, ranking_state(model, family)
        since_best = 0 if ndcg > fit_best else since_best + 1
        fit_best = max(fit_best, ndcg)
        if since_best >= config.rank_fit_patience or result.out_of_time:
            break
    model.load_state_dict(best, strict=False)
    result.seconds = time.perf_counter() - started
    log.info("%s: ranking fit kept epoch %d of %d, validation NDCG@10 %.4f (before it %.4f), %.1f s", name,
             result.best_epoch, len(result.epochs), result.best_ndcg, result.initial_ndcg, result.seconds)
    return result


def refit_ranking(model: nn.Module, family: Family, ratings: Interactions, result: RankingFitResult,
                  config: TrainingConfig, generator: torch.Generator, name: str) -> None:
    """Train ``model``'s ranking head on ``ratings`` (training and validation together) for the
    ranking fit's best number of epochs, from a restarted head as the fit started; none where the
    fit kept the head it started from."""
    if not result.best_epoch:
        return
    started = time.perf_counter()
    family.restart_ranking(model, generator)
    deadline = None if config.time_budget_s is None else started + config.time_budget_s
    positives = _Positives.of(ratings)
    optimizer, batch_size = _optimizer(model, family, config, len(positives.users))
    for epoch in range(1, result.best_epoch + 1):
        loss, out_of_time = _epoch(model, family, positives, optimizer, batch_size, config, generator, deadline)
        result.refit_epochs = epoch
        log.info("%s ranking refit epoch %2d of %d: loss %.4f", name, epoch, result.best_epoch, loss)
        if out_of_time:
            result.out_of_time = True
            break
    result.seconds += time.perf_counter() - started


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _n_items(model: nn.Module, family: Family) -> int:
    with torch.no_grad():
        return int(family.ranking_factors(model, torch.zeros(1, dtype=torch.long, device=_device(model)))[2].shape[0])


def _optimizer(model: nn.Module, family: Family, config: TrainingConfig,
               n_positives: int) -> tuple[torch.optim.Optimizer, int]:
    batch_size = batch_size_for(config, n_positives)
    step = config.rank_learning_rate * learning_rate_for(config, batch_size) / config.learning_rate
    return torch.optim.Adam(list(family.ranking_fit_parameters(model).values()), lr=step), batch_size


def _epoch(model: nn.Module, family: Family, positives: _Positives, optimizer: torch.optim.Optimizer,
           batch_size: int, config: TrainingConfig, generator: torch.Generator,
           deadline: float | None) -> tuple[float, bool]:
    """One shuffled pass over ``positives``: the mean weighted loss, and whether time ran out."""
    model.train()
    n_items = _n_items(model, family)
    order = torch.randperm(len(positives.users), generator=generator)
    total, weight = 0.0, 0.0
    for start in range(0, len(order), batch_size):
        if deadline is not None and time.perf_counter() > deadline:
            return total / max(weight, 1e-12), True
        users, items, weights = positives.batch(order[start:start + batch_size], _device(model))
        sampled = _sample(n_items, config, generator)
        loss = _loss(model, family, users, items, weights, config.rank_decay,
                     None if sampled is None else sampled.to(items.device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * float(weights.sum())
        weight += float(weights.sum())
    return total / max(weight, 1e-12), False


def _sample(n_items: int, config: TrainingConfig, generator: torch.Generator) -> torch.Tensor | None:
    """The softmax's candidates for one batch: None for the whole catalogue (up to
    ``rank_candidates`` items), else ``rank_candidates`` items drawn uniformly."""
    if n_items <= config.rank_candidates:
        return None
    return torch.randint(0, n_items, (config.rank_candidates,), generator=generator)


def _loss(model: nn.Module, family: Family, users: torch.Tensor, items: torch.Tensor, weights: torch.Tensor,
          decay: float, sampled: torch.Tensor | None) -> torch.Tensor:
    """The weighted softmax cross-entropy of each rated item among the candidates (``sampled``, or
    every item where None), plus ``decay`` times the squared norms of the batch's user vectors and
    rated items' vectors."""
    user, items_side, offsets = family.ranking_factors(model, users)
    rated = items_side.index_select(0, items)
    if sampled is None:
        logits = user @ items_side.T + offsets
        target = items
    else:   # the rated item first, then the sample, where a copy of the rated item is masked
        others = user @ items_side.index_select(0, sampled).T + offsets.index_select(0, sampled)
        others = others.masked_fill(sampled[None, :] == items[:, None], float("-inf"))
        logits = torch.cat([((user * rated).sum(-1) + offsets.index_select(0, items))[:, None], others], 1)
        target = torch.zeros_like(items)
    picked = nn.functional.cross_entropy(logits, target, reduction="none")
    penalty = decay * (user.pow(2).sum() + rated.pow(2).sum()) / len(users)
    return (picked * weights).sum() / weights.sum() + penalty


def _validation_measure(model: nn.Module, family: Family, train: Interactions, validation: Interactions,
                        config: TrainingConfig, generator: torch.Generator):
    """``() -> NDCG@10`` of the model's current head on (a seeded sample of) the validation users."""
    liked = validation.take(np.flatnonzero(validation.unit >= config.rank_relevant_min))
    users = np.unique(liked.users)
    if len(users) > config.rank_validation_users:
        pick = torch.randperm(len(users), generator=generator)[:config.rank_validation_users].numpy()
        users = np.sort(users[pick])
        liked = liked.take(np.flatnonzero(np.isin(liked.users, users)))
    seen = (train.users, train.items)

    @torch.no_grad()
    def chunks(chosen: np.ndarray):
        model.eval()
        device = _device(model)
        items_side, offsets = family.ranking_factors(model, torch.zeros(1, dtype=torch.long, device=device))[1:]
        for start in range(0, len(chosen), SCORE_CHUNK):
            chunk = chosen[start:start + SCORE_CHUNK]
            user = family.ranking_factors(model, torch.as_tensor(chunk, device=device))[0]
            yield chunk, (user @ items_side.T + offsets).cpu().numpy()

    return lambda: ndcg_of(chunks, seen, (liked.users, liked.items), int(_n_items(model, family)))
