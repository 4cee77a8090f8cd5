"""Mini-batch training with early stopping: a function over a model, its data and a config."""
from __future__ import annotations

import copy
import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from ..models.base import Family, Inputs, TrainingRows
from .batches import epoch_order
from .config import TrainingConfig, batch_size_for, decay_path, learning_rate_for, user_chunk_for
from .heap import TRIM_EVERY_STEPS, release_free_memory
from .optimizer import Optimizer
from .penalty import PenaltyTerm, penalty_terms, row_decays

log = logging.getLogger(__name__)

Predict = Callable[[nn.Module, Inputs], torch.Tensor]

EVAL_BATCH = 16_384

PROGRESS_BARS = True
"""Show a progress bar per epoch when stderr is a terminal (worker processes turn it off)."""


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
    refit_epochs: list[dict[str, float]] = field(default_factory=list)
    """Training curve of the refit (fresh or continued) on training + validation ratings; empty
    when there was none."""
    path: list[dict[str, float]] = field(default_factory=list)
    """Step size and embedding decay of each epoch that led to the kept weights, in order (across
    the decay path's phases), and ``rank`` where the factors were cut after that epoch: what a
    fresh refit replays."""
    cuts: list[dict[str, float]] = field(default_factory=list)
    """Each cut of the rating factors (``TrainingConfig.rank_cut``): after which epoch, the ranks
    from and to, and the validation RMSE before and after."""


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


@dataclass(frozen=True)
class Objective:
    """What the loss is made of: the family's outputs and ranking head, and the catalogue that
    unrated items are sampled from. The L2 penalty is added by the optimizer (``penalty``)."""

    family: Family
    n_items: int


def batch_loss(model: nn.Module, objective: Objective, batch: Inputs, targets: torch.Tensor,
               config: TrainingConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Total loss (rating MSE and ranking loss; the L2 penalty's gradient is the optimizer's) and
    the rating MSE of one mini-batch."""
    family = objective.family
    if not config.rank_weight:
        mse = torch.mean((family.outputs(model, batch)[0] - targets) ** 2)
        return mse, mse
    sampled = torch.randint(0, objective.n_items, targets.shape, generator=generator).to(targets.device)
    unit, rated_logits, sampled_logits = family.sampled_outputs(model, batch, sampled)
    mse = torch.mean((unit - targets) ** 2)
    logits = torch.cat([rated_logits, sampled_logits])
    labels = torch.cat([torch.ones_like(targets), torch.zeros_like(targets)])
    return mse + config.rank_weight * nn.functional.binary_cross_entropy_with_logits(logits, labels), mse


def _train_epoch(model: nn.Module, objective: Objective, train: tuple[TrainingRows, torch.Tensor],
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


def _curve_entry(epoch: int, total: float, seen: int, seconds: float, learning_rate: float,
                 embedding_decay: float, rank: int | None) -> dict[str, float]:
    """One epoch of a learning curve, from its summed rating MSE over ``seen`` ratings; ``rank``:
    of the rating factors it trained (``Family.rank``), left out for a family without one."""
    seen = max(seen, 1)
    entry = {"epoch": epoch, "train_mse": total / seen, "train_rmse": (total / seen) ** 0.5, "ratings": seen,
             "train_seconds": seconds, "learning_rate": learning_rate, "embedding_decay": embedding_decay}
    return entry if rank is None else {**entry, "rank": rank}


def _optimizer(model: nn.Module, config: TrainingConfig, n_ratings: int) -> Optimizer:
    """The optimizer for ``n_ratings`` training ratings, at its batch size and learning rate."""
    batch_size = batch_size_for(config, n_ratings)
    return Optimizer(model, config, batch_size, learning_rate_for(config, batch_size))


def _deadline(config: TrainingConfig, started: float) -> float | None:
    return None if config.time_budget_s is None else started + config.time_budget_s


def _fit_phase(model: nn.Module, objective: Objective, train: tuple[TrainingRows, torch.Tensor],
               validation: tuple[Inputs, torch.Tensor], config: TrainingConfig, generator: torch.Generator,
               name: str, result: FitResult,
               deadline: float | None) -> tuple[dict | None, list[dict[str, float]], bool]:
    """Epochs at ``config``'s embedding decay, with a fresh optimizer at the configured step,
    until ``config.patience`` epochs bring no better validation RMSE than ``result``'s best;
    appends to ``result.epochs``. Returns the weights of the phase's best epoch if it improved on
    ``result``'s best (else None), the step size and decay of the phase's epochs up to that one,
    and whether time ran out."""
    optimizer = _optimizer(model, config, train[1].shape[0])
    penalty = penalty_terms(model, objective.family, config)
    best_state, steps, to_best, since_best, out_of_time = None, [], [], 0, False
    for _ in range(config.max_epochs):
        epoch = len(result.epochs) + 1
        epoch_started = time.perf_counter()
        total, seen, out_of_time = _train_epoch(model, objective, train, optimizer, penalty, config, generator,
                                                f"{name} epoch {epoch}", deadline)
        train_seconds = time.perf_counter() - epoch_started
        val_rmse = validation_rmse(model, objective.family, validation)
        release_free_memory()
        entry = _curve_entry(epoch, total, seen, train_seconds, optimizer.learning_rate, config.embedding_decay,
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
            optimizer.set_learning_rate(optimizer.learning_rate * config.plateau_step_factor)
        if out_of_time:
            log.info("%s: time budget of %.0f s reached during epoch %d (%d of %d ratings seen)",
                     name, config.time_budget_s, epoch, seen, train[1].shape[0])
            break
    optimizer.release()
    return best_state, to_best, out_of_time


def _step(entry: dict[str, float]) -> dict[str, float]:
    """What a refit replays of a curve's epoch: its step size and embedding decay."""
    return {"learning_rate": entry["learning_rate"], "embedding_decay": entry["embedding_decay"]}


def validation_rmse(model: nn.Module, family: Family, validation: tuple[Inputs, torch.Tensor]) -> float:
    """RMSE on [0, 1] of ``model``'s predictions for the validation pairs."""
    return rmse_unit(predict_in_batches(model, family.predict, validation[0]), validation[1])


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


def _cut_best(model: nn.Module, objective: Objective, validation: tuple[Inputs, torch.Tensor],
              config: TrainingConfig, result: FitResult, name: str) -> nn.Module:
    """``model`` (holding the best weights so far) cut to the smallest rank within
    ``config.min_improvement`` of ``result``'s best validation RMSE (``TrainingConfig.rank_cut``),
    recorded in ``result``; ``model`` itself where nothing is cut."""
    family = objective.family
    if not config.rank_cut or family.rank(model) is None or not result.path:
        return model
    found = smallest_cut(model, family, validation, result.best_val_rmse * (1.0 + config.min_improvement))
    if found is None:
        return model
    cut, rmse = found
    before, after = family.rank(model), family.rank(cut)
    result.path[-1] = {**result.path[-1], "rank": after}
    result.cuts.append({"after_epoch": result.best_epoch, "from_rank": before, "to_rank": after,
                        "validation_rmse_before": result.best_val_rmse, "validation_rmse_after": rmse})
    log.info("%s: rating factors cut from rank %d to %d after epoch %d (validation RMSE %.5f, uncut %.5f)",
             name, before, after, result.best_epoch, rmse, result.best_val_rmse)
    result.best_val_rmse = rmse
    return cut


def fit(model: nn.Module, objective: Objective,
        train: tuple[TrainingRows, torch.Tensor], validation: tuple[Inputs, torch.Tensor],
        config: TrainingConfig, generator: torch.Generator, name: str) -> tuple[nn.Module, FitResult]:
    """Fit ``model`` by MSE on [0, 1] targets plus the ranking loss and the family's L2 terms
    (weighted by ``config.embedding_decay`` and ``config.bias_decay``); stop after
    ``config.patience`` epochs without a better validation RMSE, then follow the decay path
    (``config.decay_steps``) from the best weights while it improves, cutting the rating factors'
    rank after each phase (``config.rank_cut``). Returns the module with the weights of the epoch
    with the best validation RMSE (``model`` itself, or its cut) and what happened."""
    n = train[1].shape[0]
    batch_size = batch_size_for(config, n)
    result = FitResult(batch_size=batch_size, learning_rate=learning_rate_for(config, batch_size))
    best_state = copy.deepcopy(model.state_dict())
    started = time.perf_counter()
    deadline = _deadline(config, started)
    for step, decay in enumerate(decay_path(config)):
        if step:   # from the best weights, at the configured step again
            if deadline is not None and time.perf_counter() > deadline:   # spent by the end of the last phase
                result.out_of_time = True
                log.info("%s: time budget of %.0f s reached before embedding decay %.4g", name, config.time_budget_s,
                         decay)
                break
            model.load_state_dict(best_state)
            log.info("%s: embedding decay %.4g from the weights of epoch %d", name, decay, result.best_epoch)
        state, steps, out_of_time = _fit_phase(model, objective, train, validation,
                                               dataclasses.replace(config, embedding_decay=decay), generator, name,
                                               result, deadline)
        if state is not None:
            best_state, result.path = state, result.path + steps
        if out_of_time:
            result.out_of_time = True
            break
        if step and state is None:   # a weaker decay that does not help ends the path
            break
        model.load_state_dict(best_state)
        model = _cut_best(model, objective, validation, config, result, name)
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
    optimizer = _optimizer(model, config, train[1].shape[0])
    deadline = None if budget_s is None else time.perf_counter() + budget_s
    curve = []
    out_of_time = False
    for epoch, step in enumerate(steps, start=1):
        optimizer.set_learning_rate(step["learning_rate"])
        epoch_config = dataclasses.replace(config, embedding_decay=step["embedding_decay"])
        penalty = penalty_terms(model, objective.family, epoch_config)
        epoch_started = time.perf_counter()
        total, seen, out_of_time = _train_epoch(model, objective, train, optimizer, penalty, epoch_config, generator,
                                                f"{name} refit epoch {epoch}", deadline)
        curve.append(_curve_entry(epoch, total, seen, time.perf_counter() - epoch_started, step["learning_rate"],
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
            optimizer = _optimizer(model, config, train[1].shape[0])
            log.info("%s refit: rating factors cut to rank %d after epoch %d", name, step["rank"], epoch)
    optimizer.release()
    model.eval()
    return model, curve, out_of_time
