"""Train one model: build it, fit it with early stopping, refit on validation ratings too, and
measure it on the test ratings."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import RunConfig, child_seed
from ..data.dataset import Dataset, Interactions
from ..data.sequences import user_context
from ..models import registry
from ..models.base import Family, Inputs, TrainingRows, init_parameters
from .epoch import Objective
from .loop import FitResult, fit, refit
from .held_out_ranking import held_out_ranking
from .negatives import with_negatives
from .ranking_fit import fit_ranking, fits_ranking, ranking_state, refit_ranking
from .metrics import prediction_histogram, rating_errors
from .validation import predict_in_batches

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A fitted model with its fit history and test metrics."""

    name: str
    module: torch.nn.Module
    fit: FitResult
    test_metrics: dict[str, float]
    histogram: dict[str, list]
    """Predicted-rating counts per true rating on the test set (see ``prediction_histogram``)."""
    config: Any
    """The family's settings that build ``module``'s shape (``Family.trained_config``)."""


def _on(device: torch.device, data: tuple[Inputs, torch.Tensor]) -> tuple[Inputs, torch.Tensor]:
    inputs, targets = data
    return tuple(x.to(device) for x in inputs), targets.to(device)


@dataclass(frozen=True)
class _Setup:
    """What every stage of one model's training shares."""

    family: Family
    config: Any
    dataset: Dataset
    device: torch.device
    seed: int

    def fresh(self, ratings: Interactions) -> tuple[torch.nn.Module, torch.Generator]:
        """A newly initialised module (its global mean from ``ratings``) and its generator."""
        vocab = self.dataset.vocab
        generator = torch.Generator().manual_seed(self.seed)
        mean = float(ratings.unit.mean())
        if self.dataset.implicit:   # the rating output's targets: as many sampled zeros as interactions
            mean /= 2
        module = self.family.build(self.config, vocab.n_users, vocab.n_items, mean)
        init_parameters(module, generator)
        return module.to(self.device), generator

    def training_data(self, ratings: Interactions) -> tuple[TrainingRows, torch.Tensor]:
        rows, targets = self.family.training_inputs(ratings, self.config, self.dataset.vocab.n_items)
        return rows.to(self.device), targets.to(self.device)

    def pair_data(self, ratings: Interactions, context_from: Interactions) -> tuple[Inputs, torch.Tensor]:
        """Inputs of ``ratings``' pairs scored from ``context_from``'s latest ratings, and targets."""
        vocab = self.dataset.vocab
        context = user_context(context_from, vocab.n_users, vocab.n_items, self.family.context_length(self.config))
        return self.family.pair_inputs(ratings.users, ratings.items, context), torch.as_tensor(ratings.unit)


def _refit(setup: _Setup, module: torch.nn.Module, generator: torch.Generator, result: FitResult,
           objective: Objective) -> tuple[torch.nn.Module, Interactions]:
    """Let the validation ratings join the model (``TrainingConfig.refit``); returns the module
    to keep and the ratings it was last trained on. A fresh refit that the time budget cuts short
    is dropped for the early-stopped module: a fresh model part-way through its epochs is worse."""
    training = setup.config.training
    dataset = setup.dataset
    if training.refit == "none" or not len(dataset.validation) or result.out_of_time:
        return module, dataset.train
    started = time.perf_counter()
    both = dataset.train.concat(dataset.validation)
    early_stopped = module
    if training.refit == "fresh":   # the steps (and decays) that led to the kept weights, replayed
        module, generator = setup.fresh(both)
        steps = result.path
    else:   # "continue": the early-stopped module and its generator go on at the best epoch's step and decay
        steps = [result.path[-1]] * training.continue_epochs
    budget = None if training.time_budget_s is None else max(training.time_budget_s - result.seconds, 0.0)
    module, result.refit_epochs, result.out_of_time = refit(module, objective, setup.training_data(both), steps,
                                                            training, generator, setup.family.name, budget)
    result.seconds += time.perf_counter() - started
    if result.out_of_time and training.refit == "fresh":
        log.info("%s: the fresh refit did not finish within the time budget; keeping the early-stopped model",
                 setup.family.name)
        return early_stopped, dataset.train
    return module, both


def _test(setup: _Setup, module: torch.nn.Module, context_from: Interactions) -> tuple[dict[str, float], dict]:
    """Test metrics and the predicted-rating histogram (none for implicit feedback: top-N figures
    instead of rating errors), on the CPU."""
    test = setup.dataset.test
    scale = setup.dataset.scale
    if setup.dataset.implicit:
        vocab = setup.dataset.vocab
        return held_out_ranking(setup.family, module, setup.family.context_length(setup.config), test, context_from,
                                vocab.n_users, vocab.n_items, child_seed(setup.seed, "test users")), {}
    inputs, _ = setup.pair_data(test, context_from)
    predicted = scale.clipped_rating(predict_in_batches(module, setup.family.predict, inputs).numpy())
    return rating_errors(predicted, test.ratings, scale), prediction_histogram(predicted, test.ratings, scale)


def _solve(setup: _Setup) -> tuple[torch.nn.Module, FitResult, Interactions, Any]:
    """A closed-form family: its settings chosen on the validation ratings, then solved on the
    training ratings (and the validation ones, unless ``TrainingConfig.refit`` is "none")."""
    started = time.perf_counter()
    dataset, family = setup.dataset, setup.family
    n_users, n_items = dataset.vocab.n_users, dataset.vocab.n_items
    config = family.choose(setup.config, dataset.train, dataset.validation, n_users, n_items)
    joined = setup.config.training.refit != "none" and len(dataset.validation)
    trained_on = dataset.train.concat(dataset.validation) if joined else dataset.train
    module = family.solve(config, trained_on, n_users, n_items)
    return module, FitResult(seconds=time.perf_counter() - started), trained_on, config


def train_model(name: str, dataset: Dataset, config: RunConfig, seed: int) -> TrainedModel:
    """Fit one family on the training split (early stopping on validation, then the configured
    refit on both, see ``TrainingConfig.refit``) on ``config.device``, and measure it on the test
    split, on the CPU.

    Denormal floats are flushed to zero in this process: weight decay drives the weights of dead
    units toward zero, and arithmetic on denormals is many times slower on CPUs.
    """
    torch.set_flush_denormal(True)
    family = registry.get(name)
    model_config = config.model_config(name)
    if dataset.implicit:
        model_config = family.implicit_config(model_config)
    setup = _Setup(family, model_config, dataset, torch.device(config.device), seed)
    if setup.family.closed_form:
        module, result, trained_on, trained_config = _solve(setup)
    else:
        module, result, trained_on = _train(setup)
        trained_config = setup.family.trained_config(setup.config, module)
    metrics, histogram = _test(setup, module, trained_on)
    reference = f" (untuned reference: {setup.family.untuned_reference_rmse:.2f})" \
        if setup.family.untuned_reference_rmse is not None else ""
    if dataset.implicit:
        log.info("%s test: NDCG@10 %.4f, recall@20 %.4f, MAP@10 %.4f over %d users", name, metrics["ndcg_at_10"],
                 metrics["recall_at_20"], metrics["map_at_10"], metrics["users"])
    else:
        log.info("%s test: RMSE %.4f, MAE %.4f on the rating scale, RMSE %.4f on [0, 1]%s", name,
                 metrics["rmse_stars"], metrics["mae_stars"], metrics["rmse_unit"], reference)
    return TrainedModel(name, module, result, metrics, histogram, trained_config)


def _validation_pairs(setup: _Setup) -> Interactions:
    """The pairs the rating fit's early stopping is judged on: the validation ratings, or for
    implicit feedback its interactions and as many sampled non-interactions (seeded)."""
    dataset = setup.dataset
    if not dataset.implicit:
        return dataset.validation
    rng = np.random.default_rng(child_seed(setup.seed, "validation negatives"))
    return with_negatives(dataset.validation, dataset.train, dataset.vocab.n_items, rng)


def _train(setup: _Setup) -> tuple[torch.nn.Module, FitResult, Interactions]:
    """A family trained by epochs: early stopping on the validation ratings, then the refit."""
    dataset = setup.dataset
    module, generator = setup.fresh(dataset.train)
    objective = Objective(setup.family, dataset.vocab.n_items)
    validation = _on(setup.device, setup.pair_data(_validation_pairs(setup), dataset.train))
    training, family = setup.config.training, setup.family
    module, result = fit(module, objective, setup.training_data(dataset.train), validation, training,
                         generator, family.name)
    if not fits_ranking(module, family, training):
        module, trained_on = _refit(setup, module, generator, result, objective)
        return module.cpu(), result, trained_on
    joint_head = ranking_state(module, family)
    ranking_generator = torch.Generator().manual_seed(child_seed(setup.seed, "ranking"))   # the rating's draws unchanged
    result.ranking = fit_ranking(module, family, dataset.train, dataset.validation, training, ranking_generator,
                                 family.name)
    fitted_head = ranking_state(module, family)
    module.load_state_dict(joint_head, strict=False)   # a continued refit goes on from the rating fit's module
    module, trained_on = _refit(setup, module, generator, result, objective)
    if trained_on is dataset.train:   # no refit: the head the ranking fit kept
        module.load_state_dict(fitted_head, strict=False)
    else:
        refit_ranking(module, family, trained_on, result.ranking, training, ranking_generator, family.name)
    result.seconds += result.ranking.seconds
    return module.cpu(), result, trained_on
