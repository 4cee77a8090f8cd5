"""Fitting with early stopping, the decay path and the rank cut, and the refit: functions over a
model, its data and a config."""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.base import Inputs, TrainingRows
from .config import TrainingConfig, batch_size_for, decay_path, learning_rate_for, plateau_step, weight_decay_for
from .epoch import Objective, curve_entry, optimizer_for, train_epoch
from .heap import keep_heap_resident, release_free_memory
from .penalty import penalty_terms
from .rank_cut import cut_within
from .ranking_fit import RankingFitResult
from .validation import validation_rmse

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What happened during a fit: per-epoch curves and the epoch whose weights were kept."""

    best_epoch: int = 0
    best_val_rmse: float = float("inf")
    epochs: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    out_of_time: bool = False
    """Whether the time budget cut the fit or its refit short."""
    batch_size: int = 0
    """Ratings per mini-batch (``TrainingConfig.batch_size``, or the automatic one)."""
    learning_rate: float = 0.0
    """The step size used with that batch size (``learning_rate_for``)."""
    weight_decay: float = 0.0
    """The dense layers' weight decay for the training set's size (``weight_decay_for``)."""
    refit_epochs: list[dict[str, float]] = field(default_factory=list)
    """Training curve of the refit (fresh or continued) on training + validation ratings; empty
    when there was none."""
    path: list[dict[str, float]] = field(default_factory=list)
    """Step size and embedding decay of each epoch that led to the kept weights, in order (across
    the decay path's phases), and ``rank`` where the factors were cut after that epoch: what a
    fresh refit replays."""
    cuts: list[dict[str, float]] = field(default_factory=list)
    """Each cut of the rating factors (``TrainingConfig.rank_cut``): the epoch whose weights were
    cut (``after_epoch``) and the last epoch run before it (``at_epoch``: later at a plateau), the
    ranks from and to, and the validation RMSE before and after."""
    ranking: RankingFitResult | None = None
    """The ranking fit after it; None where there was none."""
    offered_epoch: int = 0
    """The last epoch whose weights were offered to the rank cut. Each epoch's are offered once: a
    cut's validation RMSE is the bar the next cut is held to, so cutting the same weights again
    would let cuts each within ``min_improvement`` of the one before add up."""


@dataclass
class _Phase:
    """What one phase of the fit leaves: its module (cut, if it was) and, if the phase improved on
    the best validation RMSE before it, its best weights and the steps that led to them."""

    model: nn.Module
    best_state: dict | None
    steps: list[dict[str, float]]
    out_of_time: bool


def _fit_phase(model: nn.Module, objective: Objective, train: tuple[TrainingRows, torch.Tensor],
               validation: tuple[Inputs, torch.Tensor], config: TrainingConfig, generator: torch.Generator,
               name: str, result: FitResult, deadline: float | None) -> _Phase:
    """Epochs at ``config``'s embedding decay, with a fresh optimizer at the configured step,
    until ``config.patience`` epochs bring no better validation RMSE than ``result``'s best;
    appends to ``result.epochs``. At each plateau of a phase that has improved, its best weights
    are offered to the rank cut (``TrainingConfig.rank_cut``): a cut phase goes on from them, cut,
    with a fresh optimizer at the plateau's step, so that its remaining epochs train the smaller
    rank. Returns the phase's module, its best weights if it improved on ``result``'s best (else
    None), the step size, decay (and cuts) of the phase's epochs up to them, and whether time ran out."""
    n_ratings = train[1].shape[0]
    optimizer = optimizer_for(model, config, n_ratings)
    penalty = penalty_terms(model, objective.family, config)
    best_state, steps, to_best, since_best, out_of_time = None, [], [], 0, False
    for _ in range(config.max_epochs):
        epoch = len(result.epochs) + 1
        epoch_started = time.perf_counter()
        total, seen, out_of_time = train_epoch(model, objective, train, optimizer, penalty, config, generator,
                                                f"{name} epoch {epoch}", deadline)
        train_seconds = time.perf_counter() - epoch_started
        # a pass that saw no ratings is no epoch; a fit's first stays, to validate the initial weights
        if out_of_time and not seen and result.epochs:
            log.info("%s: time budget of %.0f s reached before epoch %d", name, config.time_budget_s, epoch)
            break
        val_rmse = validation_rmse(model, objective.family, validation)
        release_free_memory()
        entry = curve_entry(epoch, total, seen, train_seconds, optimizer.learning_rate, config.embedding_decay,
                             objective.family.rank(model))
        result.epochs.append({**entry, "validation_rmse": val_rmse})
        steps.append(_step(entry))
        improved = val_rmse < result.best_val_rmse * (1.0 - config.min_improvement)
        log.info("%s epoch %2d: train RMSE %.4f, validation RMSE %.4f (0-1 scale)%s",
                 name, epoch, entry["train_rmse"], val_rmse, " *" if improved else "")
        if improved:
            result.best_epoch, result.best_val_rmse = epoch, val_rmse
            best_state, to_best, since_best = copy.deepcopy(model.state_dict()), list(steps), 0
        else:
            since_best += 1
            if since_best >= config.patience:
                break
            learning_rate = plateau_step(config, optimizer.learning_rate)
            cut = _cut_at_plateau(model, best_state, objective, validation, config, result, to_best, name)
            if cut is not None:   # on from the best weights, cut: the epochs since them are dropped
                optimizer.release()
                model, best_state, steps = cut, copy.deepcopy(cut.state_dict()), list(to_best)
                optimizer = optimizer_for(model, config, n_ratings)
                penalty = penalty_terms(model, objective.family, config)
            optimizer.set_learning_rate(learning_rate)
        if out_of_time:
            log.info("%s: time budget of %.0f s reached during epoch %d (%d of %d ratings seen)",
                     name, config.time_budget_s, epoch, seen, n_ratings)
            break
    optimizer.release()
    return _Phase(model, best_state, to_best, out_of_time)


def _cut_at_plateau(model: nn.Module, best_state: dict | None, objective: Objective,
                    validation: tuple[Inputs, torch.Tensor], config: TrainingConfig, result: FitResult,
                    to_best: list[dict[str, float]], name: str) -> nn.Module | None:
    """The cut of the phase's best weights (``_cut``), or None where there is none (the phase has
    not improved, they may not be cut, or no smaller rank is as good)."""
    if best_state is None or not _may_cut(model, objective, config, result):   # before copying the module
        return None
    best = copy.deepcopy(model)
    best.load_state_dict(best_state)
    cut = _cut(best, objective, validation, config, result, to_best, name)
    return None if cut is best else cut


def _may_cut(model: nn.Module, objective: Objective, config: TrainingConfig, result: FitResult) -> bool:
    """Whether ``result``'s best weights may be offered to the rank cut: the config asks for it, the
    family has a rank, those weights have not been offered yet (``FitResult.offered_epoch``), and
    they rate at least ``config.rank_cut_min_gain`` better than the fit's first epoch."""
    return (config.rank_cut and objective.family.rank(model) is not None and result.offered_epoch != result.best_epoch
            and bool(result.epochs)
            and result.best_val_rmse <= result.epochs[0]["validation_rmse"] * (1.0 - config.rank_cut_min_gain))


def _cut(model: nn.Module, objective: Objective, validation: tuple[Inputs, torch.Tensor], config: TrainingConfig,
         result: FitResult, path: list[dict[str, float]], name: str) -> nn.Module:
    """``model`` (holding ``result``'s best weights, which the steps ``path`` led to) cut to the
    smallest rank within ``config.min_improvement`` of their validation RMSE
    (``TrainingConfig.rank_cut``): the cut is recorded in ``result``, and ``path``'s last step
    marked with its rank for a refit to replay. ``model`` itself where nothing is cut."""
    if not path or not _may_cut(model, objective, config, result):
        return model
    result.offered_epoch = result.best_epoch
    found = cut_within(model, objective.family, validation, result.best_val_rmse, config.min_improvement)
    if found is None:
        return model
    cut, record = found
    path[-1] = {**path[-1], "rank": record["to_rank"]}
    result.cuts.append({"after_epoch": result.best_epoch, "at_epoch": len(result.epochs), **record})
    log.info("%s: rating factors cut from rank %d to %d after epoch %d (validation RMSE %.5f, uncut %.5f)",
             name, record["from_rank"], record["to_rank"], result.best_epoch, record["validation_rmse_after"],
             result.best_val_rmse)
    result.best_val_rmse = record["validation_rmse_after"]
    return cut


def _step(entry: dict[str, float]) -> dict[str, float]:
    """What a refit replays of a curve's epoch: its step size and embedding decay."""
    return {"learning_rate": entry["learning_rate"], "embedding_decay": entry["embedding_decay"]}


def fit(model: nn.Module, objective: Objective,
        train: tuple[TrainingRows, torch.Tensor], validation: tuple[Inputs, torch.Tensor],
        config: TrainingConfig, generator: torch.Generator, name: str) -> tuple[nn.Module, FitResult]:
    """Fit ``model`` by MSE on [0, 1] targets plus the ranking loss and the family's L2 terms
    (weighted by ``config.embedding_decay`` and ``config.bias_decay``); stop after
    ``config.patience`` epochs without a better validation RMSE, then follow the decay path
    (``config.decay_steps``) from the best weights while it improves, cutting the rating factors'
    rank at each plateau and after each phase (``config.rank_cut``). Returns the module with the
    weights of the epoch with the best validation RMSE (``model`` itself, or its cut) and what
    happened."""
    keep_heap_resident()
    n = train[1].shape[0]
    batch_size = batch_size_for(config, n)
    result = FitResult(batch_size=batch_size, learning_rate=learning_rate_for(config, batch_size),
                       weight_decay=weight_decay_for(config, n))
    best_state = copy.deepcopy(model.state_dict())
    started = time.perf_counter()
    deadline = None if config.time_budget_s is None else started + config.time_budget_s
    for step, decay in enumerate(decay_path(config)):
        if step:   # from the best weights, at the configured step again
            if deadline is not None and time.perf_counter() > deadline:   # spent by the end of the last phase
                result.out_of_time = True
                log.info("%s: time budget of %.0f s reached before embedding decay %.4g", name, config.time_budget_s,
                         decay)
                break
            model.load_state_dict(best_state)
            log.info("%s: embedding decay %.4g from the weights of epoch %d", name, decay, result.best_epoch)
        phase = _fit_phase(model, objective, train, validation, dataclasses.replace(config, embedding_decay=decay),
                           generator, name, result, deadline)
        model = phase.model
        if phase.best_state is not None:
            best_state, result.path = phase.best_state, result.path + phase.steps
        if phase.out_of_time:
            result.out_of_time = True
            break
        if step and phase.best_state is None:   # a weaker decay that does not help ends the path
            break
        model.load_state_dict(best_state)
        model = _cut(model, objective, validation, config, result, result.path, name)
        best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    log.info("%s: best epoch %d of %d, validation RMSE %.4f, %.1f s", name, result.best_epoch,
             len(result.epochs), result.best_val_rmse, result.seconds)
    return model, result


def refit(model: nn.Module, objective: Objective, train: tuple[TrainingRows, torch.Tensor],
          steps: list[dict[str, float]], config: TrainingConfig, generator: torch.Generator, name: str,
          budget_s: float | None = None) -> tuple[nn.Module, list[dict[str, float]], bool]:
    """Train ``model`` (a fresh copy, or the early-stopped model to continue it) for one pass over
    ``train`` per entry of ``steps`` (its ``learning_rate`` and ``embedding_decay``, and a
    ``rank`` to cut the factors to after it, as ``FitResult.path`` holds them) with a new
    optimizer (no validation, final weights kept; a new one after a cut), for at most
    ``budget_s`` seconds; return the trained module (``model``, or its cut), the per-epoch
    training curve and whether the budget cut it short."""
    family = objective.family
    optimizer = optimizer_for(model, config, train[1].shape[0])
    deadline = None if budget_s is None else time.perf_counter() + budget_s
    curve = []
    out_of_time = False
    for epoch, step in enumerate(steps, start=1):
        optimizer.set_learning_rate(step["learning_rate"])
        epoch_config = dataclasses.replace(config, embedding_decay=step["embedding_decay"])
        penalty = penalty_terms(model, objective.family, epoch_config)
        epoch_started = time.perf_counter()
        total, seen, out_of_time = train_epoch(model, objective, train, optimizer, penalty, epoch_config, generator,
                                                f"{name} refit epoch {epoch}", deadline)
        if out_of_time and not seen:
            log.info("%s: refit stopped by the time budget of %.0f s before epoch %d", name, config.time_budget_s, epoch)
            break
        curve.append(curve_entry(epoch, total, seen, time.perf_counter() - epoch_started, step["learning_rate"],
                                  step["embedding_decay"], family.rank(model)))
        log.info("%s refit epoch %2d of %d: train RMSE %.4f (0-1 scale)", name, epoch, len(steps),
                 curve[-1]["train_rmse"])
        if out_of_time:
            log.info("%s: refit stopped by the time budget of %.0f s (fit and refit together)", name,
                     config.time_budget_s)
            break
        if "rank" in step and step["rank"] < family.rank(model):
            optimizer.release()
            model = family.cut(model, int(step["rank"]))
            optimizer = optimizer_for(model, config, train[1].shape[0])
            log.info("%s refit: rating factors cut to rank %d after epoch %d", name, step["rank"], epoch)
    optimizer.release()
    model.eval()
    return model, curve, out_of_time
