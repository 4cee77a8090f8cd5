"""The ranking fit: after the rating fit, the ranking head's own parameters trained alone for
top-N lists.

The objective (``TrainingConfig.rank_loss``) is, for ratings, a softmax over the catalogue (over
a uniform sample of it, for a large one) of each rated item against every other, weighted by the
rating on [0, 1]: a multinomial likelihood of what each user rates, and rates highly, among all
items, which is what a top-N list is. For implicit feedback it is the weighted squared error of
each user's whole catalogue row against its interactions (implicit-feedback ALS's objective),
where every untouched item counts as a weak zero, solved by ALS (``ranking_als``) with recent
interactions weighed up (``recency``). The softmax stops on validation NDCG@10; ALS runs to
convergence. The rating loss's sampled ranking term
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
from .ranking_als import WeightedPairs, objective, sweep
from .recency import RECENCY_WEIGHTS, has_order, latest_split, recency_weights
from .ranking_metric import ndcg_of

log = logging.getLogger(__name__)

SCORE_CHUNK = 1024
"""Users scored at a time for the validation figure."""
RECENCY_USERS = 20_000
"""Most users the recency weight is chosen on (a seeded sample of a larger catalogue's)."""


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
    recency_weight: float = 0.0
    """The "squared" loss's recency weight (``recency``), chosen on each user's latest training interactions."""
    recency_ndcg: dict[str, float] = field(default_factory=dict)
    """Each recency weight tried, and the NDCG@10 of its head on those latest interactions."""

    def to_dict(self) -> dict:
        def figure(value: float) -> float | None:
            return None if np.isnan(value) else value
        return {"best_epoch": self.best_epoch, "validation_ndcg_at_10": figure(self.best_ndcg),
                "initial_validation_ndcg_at_10": figure(self.initial_ndcg), "epochs": self.epochs,
                "refit_epochs": self.refit_epochs, "candidates": self.candidates, "seconds": self.seconds,
                "out_of_time": self.out_of_time, "recency_weight": self.recency_weight,
                "recency_ndcg_at_10": self.recency_ndcg}


class _Softmax:
    """The "softmax" objective: the rated pairs with their weights (ratings on [0, 1]; zero left
    out), its epoch one shuffled pass of Adam over them."""

    converges = False
    """Its epochs approach the optimum noisily: the fit stops on validation NDCG@10."""

    def __init__(self, ratings: Interactions, model: nn.Module, family: Family, config: TrainingConfig) -> None:
        unit = ratings.unit
        keep = np.flatnonzero(unit > 0)
        self.users, self.items = torch.as_tensor(ratings.users[keep]), torch.as_tensor(ratings.items[keep])
        self.weights = torch.as_tensor(unit[keep], dtype=torch.float32)
        self.config = config
        self.batch_size = batch_size_for(config, len(keep))
        # rank_learning_rate at reference_batch, by the square-root rule above it
        step = config.rank_learning_rate * learning_rate_for(config, self.batch_size) / config.learning_rate
        self.optimizer = torch.optim.Adam(list(family.ranking_fit_parameters(model).values()), lr=step)

    def __len__(self) -> int:
        return len(self.users)

    def epoch(self, model: nn.Module, family: Family, generator: torch.Generator,
              deadline: float | None) -> tuple[float, bool, int]:
        """One shuffled pass: the mean weighted loss, whether time ran out, the rated pairs covered."""
        model.train()
        order = torch.randperm(len(self), generator=generator)
        total, weight, rows = 0.0, 0.0, 0
        for start in range(0, len(order), self.batch_size):
            if deadline is not None and time.perf_counter() > deadline:
                return total / max(weight, 1e-12), True, rows
            index = order[start:start + self.batch_size]
            loss, batch_weight = self.loss(model, family, index, generator)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * batch_weight
            weight += batch_weight
            rows += len(index)
        return total / max(weight, 1e-12), False, rows

    def loss(self, model: nn.Module, family: Family, index: torch.Tensor,
             generator: torch.Generator) -> tuple[torch.Tensor, float]:
        """The batch's loss and its weight in the epoch's mean."""
        device = _device(model)
        users, items, weights = (x[index].to(device) for x in (self.users, self.items, self.weights))
        sampled = _sample(_n_items(model, family), self.config, generator)
        return (_loss(model, family, users, items, weights, self.config.rank_decay,
                      None if sampled is None else sampled.to(device)), float(weights.sum()))


class _Squared:
    """The "squared" objective (``ranking_als``): each user's catalogue row of interactions, its
    epoch one sweep of alternating least squares over the head's blocks."""

    converges = True
    """Each sweep lowers the objective: the fit runs it to convergence, as ALS does."""

    def __init__(self, ratings: Interactions, n_items: int, config: TrainingConfig, recency_weight: float) -> None:
        value = ratings.unit * recency_weights(ratings, recency_weight, config.rank_recency_window)
        keep = np.flatnonzero(ratings.unit > 0)
        n_rows = int(ratings.users[keep].max()) + 1 if len(keep) else 0
        matrix = sparse.csr_matrix((value[keep], (ratings.users[keep], ratings.items[keep])),
                                   shape=(n_rows, n_items), dtype=np.float64)
        matrix.sum_duplicates()
        self.pairs = WeightedPairs.of(matrix, config.rank_positive_weight)
        self.decay = config.rank_decay

    def __len__(self) -> int:
        return len(self.pairs.users)

    def epoch(self, model: nn.Module, family: Family, generator: torch.Generator,
              deadline: float | None) -> tuple[float, bool, int]:
        """One sweep: the objective per user after it, whether time ran out, the interactions
        covered (none, and no sweep, where time had already run out)."""
        if deadline is not None and time.perf_counter() > deadline:
            return float("nan"), True, 0
        blocks = family.ranking_blocks(model)
        sweep(blocks, self.pairs, self.decay)
        loss = objective(blocks, self.pairs, self.decay) / max(len(self), 1)
        return loss, deadline is not None and time.perf_counter() > deadline, self.pairs.nnz


def _examples(ratings: Interactions, model: nn.Module, family: Family, config: TrainingConfig,
              recency_weight: float = 0.0) -> _Softmax | _Squared:
    """The ranking fit's objective for ``config.rank_loss``, ready to run epochs."""
    if config.rank_loss == "squared":
        return _Squared(ratings, _n_items(model, family), config, recency_weight)
    return _Softmax(ratings, model, family, config)


def ranking_state(model: nn.Module, family: Family) -> dict[str, torch.Tensor]:
    """A copy of the ranking head's own parameters."""
    return {name: p.detach().clone() for name, p in family.ranking_parameters(model).items()}


def fits_ranking(model: nn.Module, family: Family, config: TrainingConfig) -> bool:
    """Whether the ranking fit applies: asked for, and the module's head is a product with
    parameters of its own."""
    if not config.rank_fit_patience or not family.ranking_fit_parameters(model):
        return False
    if config.rank_loss == "squared" and family.ranking_blocks(model) is None:
        return False
    with torch.no_grad():
        return family.ranking_factors(model, torch.zeros(1, dtype=torch.long, device=_device(model))) is not None


def fit_ranking(model: nn.Module, family: Family, train: Interactions, validation: Interactions,
                config: TrainingConfig, generator: torch.Generator, name: str) -> RankingFitResult:
    """Train ``model``'s ranking head on ``train``: the softmax until ``config.rank_fit_patience``
    epochs bring no better NDCG@10 on ``validation`` (relevant: ``config.rank_relevant_min`` and up;
    seen: ``train``), keeping the best epoch's head (the one it had, where none ranks better); the
    squared loss's sweeps until its objective falls by less than ``config.rank_tolerance``,
    keeping the last."""
    started = time.perf_counter()
    n_items = _n_items(model, family)
    result = RankingFitResult(candidates=n_items if config.rank_loss == "squared" else min(config.rank_candidates, n_items))
    measure = _validation_measure(model, family, train, validation, config, generator)
    result.initial_ndcg = result.best_ndcg = measure()
    if np.isnan(result.initial_ndcg):
        log.info("%s: no validation rating counts as relevant; the ranking head stays as the rating fit left it", name)
        return result
    best = ranking_state(model, family)
    deadline = None if config.time_budget_s is None else started + config.time_budget_s
    if config.rank_loss == "squared" and config.rank_recency_window and has_order(train):
        result.recency_weight, result.recency_ndcg = _choose_recency(model, family, train, config, generator, deadline)
        log.info("%s: recency weight %g (NDCG@10 on each user's latest training interactions: %s)", name,
                 result.recency_weight, ", ".join(f"{k} {v:.4f}" for k, v in result.recency_ndcg.items()))
    family.restart_ranking(model, generator)
    examples = _examples(train, model, family, config, result.recency_weight)
    since_best, fit_best, previous = 0, float("-inf"), float("inf")
    for epoch in range(1, config.max_epochs + 1):
        epoch_started = time.perf_counter()
        loss, result.out_of_time, rows = examples.epoch(model, family, generator, deadline)
        ndcg = measure()
        result.epochs.append({"epoch": epoch, "train_loss": loss, "validation_ndcg_at_10": ndcg,
                              "train_seconds": time.perf_counter() - epoch_started})
        if examples.converges:
            # each sweep's head is the objective's best yet: the fit keeps the last, where the
            # objective has converged. Validation NDCG@10 is recorded, not obeyed: a split drawn at
            # random in time cannot judge the recency weighting, chosen on each user's latest.
            improved = rows > 0
            done = _converged(previous, loss, config)
        else:
            # patience counts from the fit's own best, the head it started from aside
            improved = ndcg > result.best_ndcg
            since_best = 0 if ndcg > fit_best else since_best + 1
            fit_best = max(fit_best, ndcg)
            done = since_best >= config.rank_fit_patience
        previous = loss
        log.info("%s ranking epoch %2d: loss %.4f, validation NDCG@10 %.4f%s", name, epoch, loss, ndcg,
                 " *" if improved else "")
        if improved:
            result.best_epoch, result.best_ndcg, best = epoch, ndcg, ranking_state(model, family)
        if done or result.out_of_time:
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
    examples = _examples(ratings, model, family, config, result.recency_weight)
    for epoch in range(1, result.best_epoch + 1):
        loss, out_of_time, _ = examples.epoch(model, family, generator, deadline)
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


def _users_sample(ratings: Interactions, most: int, generator: torch.Generator) -> Interactions:
    """``ratings`` of at most ``most`` of its users, drawn with ``generator``."""
    users = np.unique(ratings.users)
    if len(users) <= most:
        return ratings
    chosen = users[torch.randperm(len(users), generator=generator)[:most].numpy()]
    return ratings.take(np.flatnonzero(np.isin(ratings.users, chosen)))


def _converged(previous: float, loss: float, config: TrainingConfig) -> bool:
    """Whether a sweep took the objective from ``previous`` to ``loss`` by less than ``rank_tolerance``."""
    return bool(np.isfinite(previous)) and previous - loss <= config.rank_tolerance * abs(previous)


def _choose_recency(model: nn.Module, family: Family, train: Interactions, config: TrainingConfig,
                    generator: torch.Generator, deadline: float | None) -> tuple[float, dict[str, float]]:
    """The weight of ``RECENCY_WEIGHTS`` whose head, fitted to convergence on ``train`` less each
    user's latest interactions (``recency.latest_split``), ranks those best by NDCG@10 (the
    smallest among equals), with each weight's figure; over a seeded sample of ``RECENCY_USERS``
    users where there are more, so that the choice costs a bounded share of the fit."""
    earlier, latest = latest_split(_users_sample(train, RECENCY_USERS, generator))
    if not len(latest):
        return 0.0, {}
    measure = _validation_measure(model, family, earlier, latest, config, generator)
    figures: dict[str, float] = {}
    for weight in RECENCY_WEIGHTS:
        family.restart_ranking(model, generator)
        examples = _examples(earlier, model, family, config, weight)
        previous, swept = float("inf"), 0
        for _ in range(config.max_epochs):
            loss, out_of_time, rows = examples.epoch(model, family, generator, deadline)
            swept += rows
            if out_of_time or _converged(previous, loss, config):
                break
            previous = loss
        if swept:
            figures[f"{weight:g}"] = measure()
        if out_of_time:
            break
    if not figures:
        return 0.0, figures
    best = max(figures, key=lambda k: (figures[k], -float(k)))
    return float(best), figures


def pass_throughput(model: nn.Module, family: Family, ratings: Interactions, config: TrainingConfig,
                    generator: torch.Generator, seconds: float) -> float:
    """Training rows (rated pairs or interactions) per second of one pass of the ranking fit's
    objective over ``ratings``, cut off after ``seconds``: the figure ``make bench`` compares."""
    examples = _examples(ratings, model, family, config)
    started = time.perf_counter()
    _, _, rows = examples.epoch(model, family, generator, started + seconds)
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
