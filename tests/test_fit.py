"""``fit`` on its own: early stopping after ``patience`` epochs without a better validation RMSE,
and the best epoch's weights restored."""
from __future__ import annotations

import copy
import dataclasses
import platform

import numpy as np
import pytest
import torch

from export.config import RunConfig
from export.data.dataset import Interactions
from export.models import registry
from export.models.base import init_parameters
from export.training import epoch, heap, loop, validation
from export.training.epoch import Objective, batch_loss
from export.training.loop import fit
from export.training.optimizer import Optimizer


def tiny_problem():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 6, 200), rng.integers(0, 5, 200)
    ratings = Interactions(users, items, rng.integers(1, 6, 200).astype(np.float32), np.arange(200))
    family = registry.get("mf")
    config = RunConfig().model_config("mf")
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, decay_steps=0, rank_cut=False))  # one phase, uncut
    model = family.build(config, 6, 5, float(ratings.unit.mean()))
    init_parameters(model, torch.Generator().manual_seed(0))
    rows, targets = family.training_inputs(ratings, config, 5)
    return family, config, model, ((rows, targets), (rows.inputs, targets))


def test_fit_stops_after_patience_epochs_without_improvement_and_keeps_the_best_weights(monkeypatch):
    family, config, model, data = tiny_problem()
    scripted = iter([0.50, 0.40, 0.45, 0.41, 0.42, 0.30])   # best at epoch 2; epoch 6 is never reached
    monkeypatch.setattr(validation, "rmse_unit", lambda predicted, target: next(scripted))
    snapshots = []
    train_epoch = loop.train_epoch

    def recording_epoch(*args, **kwargs):
        result = train_epoch(*args, **kwargs)
        snapshots.append(copy.deepcopy(args[0].state_dict()))
        return result

    monkeypatch.setattr(loop, "train_epoch", recording_epoch)
    training = dataclasses.replace(config.training, patience=3, max_epochs=10, batch_size=32)
    model, result = fit(model, Objective(family, 5), *data, training, torch.Generator().manual_seed(1), "mf")
    assert [e["epoch"] for e in result.epochs] == [1, 2, 3, 4, 5]   # 3 epochs without a better one after 2
    assert result.best_epoch == 2 and result.best_val_rmse == 0.40
    assert len(snapshots) == 5
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][name], rtol=0, atol=0)   # epoch 2's weights
    assert any(not torch.equal(snapshots[4][n], snapshots[1][n]) for n in snapshots[1])  # training moved on
    assert not model.training


def test_fit_runs_max_epochs_while_it_keeps_improving(monkeypatch):
    family, config, model, data = tiny_problem()
    scripted = iter([0.5 - 0.01 * k for k in range(10)])
    monkeypatch.setattr(validation, "rmse_unit", lambda predicted, target: next(scripted))
    training = dataclasses.replace(config.training, patience=1, max_epochs=4, batch_size=64)
    model, result = fit(model, Objective(family, 5), *data, training, torch.Generator().manual_seed(1), "mf")
    assert len(result.epochs) == 4 and result.best_epoch == 4 and not result.out_of_time


@pytest.mark.skipif(platform.system() != "Linux", reason="mallopt and malloc_trim are glibc's")
def test_the_c_library_takes_the_heap_settings_and_releases_free_memory_here():
    assert heap.keep_heap_resident()
    assert heap.release_free_memory()


def test_training_keeps_the_heap_resident_and_releases_free_memory_every_few_steps_and_after_each_validation(
        monkeypatch):
    family, config, model, data = tiny_problem()          # 200 ratings
    calls, settings = [], []
    for module in (epoch, loop):   # every few steps of an epoch, and after each validation
        monkeypatch.setattr(module, "release_free_memory", lambda: calls.append(1))
    monkeypatch.setattr(epoch, "TRIM_EVERY_STEPS", 16)
    monkeypatch.setattr(loop, "keep_heap_resident", lambda: settings.append(1))
    training = dataclasses.replace(config.training, max_epochs=2, patience=5, batch_size=4)  # 50 steps an epoch
    model, _ = fit(model, Objective(family, 5), *data, training, torch.Generator().manual_seed(1), "mf")
    assert len(calls) == 2 * (50 // 16 + 1) and settings == [1]


def test_each_epoch_without_a_better_validation_rmse_shrinks_the_step(monkeypatch):
    family, config, model, data = tiny_problem()
    scripted = iter([0.50, 0.55, 0.45, 0.46, 0.47, 0.48])   # only epochs 1 and 3 improve
    monkeypatch.setattr(validation, "rmse_unit", lambda predicted, target: next(scripted))
    training = dataclasses.replace(config.training, patience=3, max_epochs=10, batch_size=64, plateau_step_factor=0.5)
    model, result = fit(model, Objective(family, 5), *data, training, torch.Generator().manual_seed(1), "mf")
    rate = result.learning_rate
    assert [e["learning_rate"] for e in result.epochs] == [rate, rate, rate / 2, rate / 2, rate / 4, rate / 8]
    assert result.best_epoch == 3


@pytest.mark.parametrize("batch_size, expected", [(64, [2.0, 2.0, 1.0, 1.0, 1.0, 1.0]),   # 2x the step: down to 1x
                                                   (16, [1.0] * 6)])                        # at 1x: kept
def test_the_plateaus_shrink_the_step_down_to_its_floor_and_no_further(monkeypatch, batch_size, expected):
    family, config, model, data = tiny_problem()
    scripted = iter([0.50, 0.55, 0.45, 0.46, 0.47, 0.48])
    monkeypatch.setattr(validation, "rmse_unit", lambda predicted, target: next(scripted))
    training = dataclasses.replace(config.training, patience=3, max_epochs=10, batch_size=batch_size,
                                   reference_batch=16, plateau_step_factor=0.5, plateau_step_floor=1.0)
    model, result = fit(model, Objective(family, 5), *data, training, torch.Generator().manual_seed(1), "mf")
    tuned = training.learning_rate
    assert [e["learning_rate"] / tuned for e in result.epochs] == pytest.approx(expected, rel=1e-12)


def test_the_optimizer_steps_with_the_rate_it_is_given_dense_and_row_wise():
    for sparse in (False, True):
        moved = []
        for rate in (1e-3, 4e-3):
            family, config, model, ((rows, targets), _) = tiny_problem()
            training = dataclasses.replace(config.training, sparse_embeddings=sparse, rank_weight=0.0)
            optimizer = Optimizer(model, training, 200, 1.0, training.weight_decay)
            optimizer.set_learning_rate(rate)
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            loss, _ = batch_loss(model, Objective(family, 5), rows.batch(torch.arange(200)), targets, training,
                                      torch.Generator().manual_seed(0))
            loss.backward()
            optimizer.step()
            moved.append({n: (p.detach() - before[n]).abs().max() for n, p in model.named_parameters()})
        for name in ("user_embedding.weight", "item_bias.weight"):   # Adam's first step is the rate times +-1
            torch.testing.assert_close(moved[1][name], 4 * moved[0][name])


def test_an_epoch_counts_as_better_only_by_the_minimum_improvement(monkeypatch):
    family, config, model, data = tiny_problem()
    scripted = iter([0.50, 0.49999, 0.4999, 0.49, 0.48996, 0.48997, 0.48998, 0.1])   # 1e-4 of 0.5 is 5e-5
    monkeypatch.setattr(validation, "rmse_unit", lambda predicted, target: next(scripted))
    training = dataclasses.replace(config.training, patience=3, max_epochs=10, batch_size=64, min_improvement=1e-4)
    model, result = fit(model, Objective(family, 5), *data, training, torch.Generator().manual_seed(1), "mf")
    assert result.best_epoch == 4 and result.best_val_rmse == 0.49   # epoch 2 and epochs 5-7 gained too little
    assert len(result.epochs) == 7


def test_the_decay_path_goes_on_from_the_best_weights_while_a_weaker_decay_helps(monkeypatch):
    family, config, model, data = tiny_problem()
    # phase 0 (decay d): best at epoch 4, after one halving; phase 1 (d/2) from epoch 4's weights:
    # best at epoch 7; phase 2 (d/4) from epoch 7's: nothing better, so the path ends (no phase 3)
    scripted = iter([0.50, 0.45, 0.46, 0.40, 0.41, 0.42, 0.38, 0.39, 0.395, 0.385, 0.381, 0.1])
    monkeypatch.setattr(validation, "rmse_unit", lambda predicted, target: next(scripted))
    starts, train_epoch = [], loop.train_epoch

    def recording_epoch(*args, **kwargs):
        starts.append(copy.deepcopy(args[0].state_dict()))
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", recording_epoch)
    training = dataclasses.replace(config.training, patience=2, max_epochs=10, batch_size=64, decay_steps=3,
                                   decay_step_factor=0.5, plateau_step_factor=0.5)
    model, result = fit(model, Objective(family, 5), *data, training, torch.Generator().manual_seed(1), "mf")
    d, r = training.embedding_decay, result.learning_rate
    assert [e["embedding_decay"] for e in result.epochs] == [d] * 6 + [d / 2] * 3 + [d / 4] * 2
    # each phase starts a fresh optimizer at the configured step, however far the one before halved it
    assert [e["learning_rate"] for e in result.epochs] == [r, r, r, r / 2, r / 2, r / 4] + [r, r, r / 2] + [r, r / 2]
    assert result.best_epoch == 7 and result.best_val_rmse == 0.38
    assert result.path == [{"learning_rate": rate, "embedding_decay": decay}
                           for rate, decay in [(r, d), (r, d), (r, d), (r / 2, d), (r, d / 2)]]
    for name in starts[0]:   # epoch k starts from starts[k - 1]
        torch.testing.assert_close(starts[6][name], starts[4][name], rtol=0, atol=0)   # phase 1 from epoch 4's
        torch.testing.assert_close(starts[9][name], starts[7][name], rtol=0, atol=0)   # phase 2 from epoch 7's
        torch.testing.assert_close(model.state_dict()[name], starts[7][name], rtol=0, atol=0)   # epoch 7's kept
    assert any(not torch.equal(starts[5][n], starts[4][n]) for n in starts[4])   # epoch 5 moved on from them


def test_a_pass_the_time_budget_ends_before_any_rating_is_no_epoch(monkeypatch):
    family, config, model, data = tiny_problem()
    train_epoch, passes = loop.train_epoch, []

    def out_of_time_at_the_third(*args, **kwargs):    # the fit's third pass, and the refit's second
        passes.append(1)
        return (0.0, 0, True) if len(passes) in (3, 5) else train_epoch(*args, **kwargs)

    validated = []
    rmse_unit = validation.rmse_unit
    monkeypatch.setattr(loop, "train_epoch", out_of_time_at_the_third)
    monkeypatch.setattr(validation, "rmse_unit", lambda *a: validated.append(1) or rmse_unit(*a))
    training = dataclasses.replace(config.training, patience=5, max_epochs=10, batch_size=64)
    model, result = fit(model, Objective(family, 5), *data, training, torch.Generator().manual_seed(1), "mf")
    assert [e["epoch"] for e in result.epochs] == [1, 2] and all(e["ratings"] == 200 for e in result.epochs)
    assert result.out_of_time and len(validated) == 2      # the empty pass is not validated either
    curve = loop.refit(model, Objective(family, 5), data[0], [result.path[-1]] * 3, training,
                       torch.Generator().manual_seed(1), "mf")[1]
    assert [e["ratings"] for e in curve] == [200]


def test_a_fit_whose_budget_is_spent_at_once_still_validates_its_initial_weights():
    family, config, model, data = tiny_problem()
    training = dataclasses.replace(config.training, max_epochs=3, batch_size=64, time_budget_s=0.0)
    model, result = fit(model, Objective(family, 5), *data, training, torch.Generator().manual_seed(1), "mf")
    assert len(result.epochs) == 1 and result.epochs[0]["ratings"] == 0
    assert result.out_of_time and np.isfinite(result.best_val_rmse)
