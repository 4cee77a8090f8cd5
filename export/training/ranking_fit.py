"""The ranking fit: after the rating fit, the ranking head's own parameters trained alone for
top-N lists, with early stopping on validation NDCG@10.

The objective (``TrainingConfig.rank_loss``) is, for ratings, a softmax over the catalogue (over
a uniform sample of it, for a large one) of each rated item against every other, weighted by the
rating on [0, 1]: a multinomial likelihood of what each user rates, and rates highly, among all
items, which is what a top-N list is. For implicit feedback it is the weighted squared error of
each user's whole catalogue row against its interactions (implicit-feedback ALS's objective),
where every untouched item counts as a weak zero. The rating loss's sampled ranking term
(``TrainingConfig.rank_weight``) stays as a regulariser of the rating fit; this fit restarts the
head and moves the head only, so that ratings are unchanged.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import sparse
from torch import nn

from ..data.dataset import Interactions
from ..models.base import Family
from .config import TrainingConfig, batch_size_for, learning_rate_for
from .ranking_metric import ndcg_of

log = logging.getLogger(__name__)

SCORE_CHUNK = 1024
"""Users scored at a time for the validation figure."""
ROW_CELLS = 1 << 22
"""Most catalogue cells (users x items) one step of the "squared" ranking loss holds."""


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
    """Items each user's or rated item's loss ran over (the catalogue, or ``rank_candidates`` sampled)."""
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
class _Softmax:
    """The "softmax" objective's examples: the rated pairs, with their weights (ratings on [0, 1];
    zero left out)."""

    users: torch.Tensor
    items: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def of(cls, ratings: Interactions) -> "_Softmax":
        unit = ratings.unit
        keep = np.flatnonzero(unit > 0)
        return cls(torch.as_tensor(ratings.users[keep]), torch.as_tensor(ratings.items[keep]),
                   torch.as_tensor(unit[keep], dtype=torch.float32))

    def __len__(self) -> int:
        return len(self.users)

    def rows(self, index: torch.Tensor) -> int:
        """Training rows (rated pairs) an example batch covers."""
        return len(index)

    def batch_size(self, config: TrainingConfig, n_items: int) -> int:
        return batch_size_for(config, len(self))

    def step_size(self, config: TrainingConfig, batch_size: int) -> float:
        """``rank_learning_rate`` at ``reference_batch``, by the square-root rule above it."""
        return config.rank_learning_rate * learning_rate_for(config, batch_size) / config.learning_rate

    def loss(self, model: nn.Module, family: Family, index: torch.Tensor, config: TrainingConfig,
             generator: torch.Generator) -> tuple[torch.Tensor, float]:
        """The batch's loss and its weight in the epoch's mean."""
        device = _device(model)
        users, items, weights = (x[index].to(device) for x in (self.users, self.items, self.weights))
        sampled = _sample(_n_items(model, family), config, generator)
        return (_loss(model, family, users, items, weights, config.rank_decay,
                      None if sampled is None else sampled.to(device)), float(weights.sum()))


@dataclass(frozen=True)
class _Squared:
    """The "squared" objective's examples: the users with interactions, and each one's row of
    confidences over the catalogue."""

    users: np.ndarray
    matrix: sparse.csr_matrix

    @classmethod
    def of(cls, ratings: Interactions, n_items: int) -> "_Squared":
        unit = ratings.unit
        keep = np.flatnonzero(unit > 0)
        users = np.unique(ratings.users[keep])
        matrix = sparse.csr_matrix((unit[keep], (ratings.users[keep], ratings.items[keep])),
                                   shape=(int(users.max()) + 1 if len(users) else 0, n_items), dtype=np.float32)
        matrix.sum_duplicates()
        return cls(users, matrix)

    def __len__(self) -> int:
        return len(self.users)

    def rows(self, index: torch.Tensor) -> int:
        """Training rows (interactions) an example batch covers: its users' interactions."""
        indptr = self.matrix.indptr
        users = self.users[index.numpy()]
        return int((indptr[users + 1] - indptr[users]).sum())

    def batch_size(self, config: TrainingConfig, n_items: int) -> int:
        return max(1, min(config.rank_user_batch, ROW_CELLS // max(n_items, 1)))

    def step_size(self, config: TrainingConfig, batch_size: int) -> float:
        return config.rank_learning_rate

    def loss(self, model: nn.Module, family: Family, index: torch.Tensor, config: TrainingConfig,
             generator: torch.Generator) -> tuple[torch.Tensor, float]:
        """The batch's summed weighted squared error and penalty per user, and its user count."""
        device = _device(model)
        users = self.users[index.numpy()]
        confidence = torch.as_tensor(self.matrix[users].toarray(), device=device)
        target = (confidence > 0).to(confidence.dtype)
        weight = 1.0 + config.rank_positive_weight * confidence
        user, items_side, offsets = family.ranking_factors(model, torch.as_tensor(users, device=device))
        error = (weight * (target - (user @ items_side.T + offsets)) ** 2).sum()
        penalty = config.rank_decay * (user.pow(2).sum() + items_side.pow(2).sum() * len(users) / len(self))
        return (error + penalty) / len(users), float(len(users))


def _examples(ratings: Interactions, model: nn.Module, family: Family, config: TrainingConfig) -> _Softmax | _Squared:
    """The ranking fit's examples for ``config.rank_loss``."""
    if config.rank_loss == "squared":
        return _Squared.of(ratings, _n_items(model, family))
    return _Softmax.of(ratings)


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
    n_items = _n_items(model, family)
    result = RankingFitResult(candidates=n_items if config.rank_loss == "squared" else min(config.rank_candidates, n_items))
    measure = _validation_measure(model, family, train, validation, config, generator)
    result.initial_ndcg = result.best_ndcg = measure()
    if np.isnan(result.initial_ndcg):
        log.info("%s: no validation rating counts as relevant; the ranking head stays as the rating fit left it", name)
        return result
    best = ranking_state(model, family)
    family.restart_ranking(model, generator)
    deadline = None if config.time_budget_s is None else started + config.time_budget_s
    examples = _examples(train, model, family, config)
    optimizer, batch_size = _optimizer(model, family, config, examples)
    since_best, fit_best = 0, float("-inf")   # patience counts from the fit's own best, the head it started from aside
    for epoch in range(1, config.max_epochs + 1):
        epoch_started = time.perf_counter()
        loss, result.out_of_time = _epoch(model, family, examples, optimizer, batch_size, config, generator,
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
    examples = _examples(ratings, model, family, config)
    optimizer, batch_size = _optimizer(model, family, config, examples)
    for epoch in range(1, result.best_epoch + 1):
        loss, out_of_time = _epoch(model, family, examples, optimizer, batch_size, config, generator, deadline)
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
               examples: _Softmax | _Squared) -> tuple[torch.optim.Optimizer, int]:
    batch_size = examples.batch_size(config, _n_items(model, family))
    return (torch.optim.Adam(list(family.ranking_fit_parameters(model).values()),
                             lr=examples.step_size(config, batch_size)), batch_size)


def _epoch(model: nn.Module, family: Family, examples: _Softmax | _Squared, optimizer: torch.optim.Optimizer,
           batch_size: int, config: TrainingConfig, generator: torch.Generator,
           deadline: float | None) -> tuple[float, bool]:
    """One shuffled pass over ``examples``: the mean weighted loss, and whether time ran out."""
    loss, out_of_time, _ = _pass(model, family, examples, optimizer, batch_size, config, generator, deadline)
    return loss, out_of_time


def _pass(model: nn.Module, family: Family, examples: _Softmax | _Squared, optimizer: torch.optim.Optimizer,
          batch_size: int, config: TrainingConfig, generator: torch.Generator,
          deadline: float | None) -> tuple[float, bool, int]:
    """``_epoch``, and the training rows it covered."""
    model.train()
    order = torch.randperm(len(examples), generator=generator)
    total, weight, rows = 0.0, 0.0, 0
    for start in range(0, len(order), batch_size):
        if deadline is not None and time.perf_counter() > deadline:
            return total / max(weight, 1e-12), True, rows
        index = order[start:start + batch_size]
        loss, batch_weight = examples.loss(model, family, index, config, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * batch_weight
        weight += batch_weight
        rows += examples.rows(index)
    return total / max(weight, 1e-12), False, rows


def pass_throughput(model: nn.Module, family: Family, ratings: Interactions, config: TrainingConfig,
                    generator: torch.Generator, seconds: float) -> float:
    """Training rows (rated pairs or interactions) per second of one pass of the ranking fit's
    objective over ``ratings``, cut off after ``seconds``: the figure ``make bench`` compares."""
    examples = _examples(ratings, model, family, config)
    optimizer, batch_size = _optimizer(model, family, config, examples)
    started = time.perf_counter()
    _, _, rows = _pass(model, family, examples, optimizer, batch_size, config, generator, started + seconds)
    return rows / (time.perf_counter() - started)


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
