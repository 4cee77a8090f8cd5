"""Training: the refit on training + validation, models trained side by side in worker processes,
and sparse embedding gradients for large tables."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from export.config import RunConfig
from export.families import FAMILIES, init_parameters
from export.loading import build_dataset
from export.pipeline import train_model
from export.synthetic import generate_ratings
from export.training import SPARSE_EMBEDDING_PARAMETERS, Objective, Optimizer, fit
from export.workers import train_models


def with_training(config: RunConfig, name: str, **changes) -> RunConfig:
    model = config.model_config(name)
    return dataclasses.replace(config, **{name: dataclasses.replace(
        model, training=dataclasses.replace(model.training, **changes))})


@pytest.fixture(scope="module")
def dataset():
    config = RunConfig()
    return build_dataset([generate_ratings(60, 40, 1_500, seed=5)], config, np.random.default_rng(0))


@pytest.mark.parametrize("name", ["mf", "dense", "lstm"])
def test_refit_runs_the_chosen_epoch_count_on_training_and_validation(dataset, name):
    config = with_training(RunConfig(), name, max_epochs=4, patience=2, batch_size=256)
    refitted = train_model(name, dataset, config, seed=11)
    assert refitted.fit.best_epoch >= 1
    assert len(refitted.fit.refit_epochs) == refitted.fit.best_epoch
    plain = train_model(name, dataset, with_training(config, name, refit=False), seed=11)
    assert plain.fit.refit_epochs == []
    assert plain.fit.best_epoch == refitted.fit.best_epoch  # the same first fit chose the count
    assert refitted.test_metrics != plain.test_metrics  # the kept model is the refit one


def test_models_trained_side_by_side_in_workers_equal_those_trained_one_after_another(dataset):
    config = RunConfig(models=("mf", "lstm"))
    for name in config.models:
        config = with_training(config, name, max_epochs=2, batch_size=256)
    seeds = {"mf": 11, "lstm": 12}
    in_process = train_models(dataset, config, seeds, jobs=1)
    in_workers = train_models(dataset, config, seeds, jobs=2)
    assert [t.name for t in in_workers] == ["mf", "lstm"]
    for alone, worker in zip(in_process, in_workers):
        assert worker.fit.best_epoch == alone.fit.best_epoch
        assert worker.test_metrics == pytest.approx(alone.test_metrics, rel=1e-4)
        for key, value in alone.module.state_dict().items():  # thread counts may reorder float sums
            torch.testing.assert_close(worker.module.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def test_refit_is_skipped_when_the_time_budget_cut_the_fit_short(dataset):
    config = with_training(RunConfig(), "mf", max_epochs=3, batch_size=64, time_budget_s=0.0)
    trained = train_model("mf", dataset, config, seed=11)
    assert trained.fit.out_of_time and trained.fit.refit_epochs == []


@pytest.mark.parametrize("name", ["mf", "dense", "lstm"])
def test_sparse_embedding_gradients_train_every_family(dataset, name):
    family = FAMILIES[name]
    model_config = RunConfig().model_config(name)
    vocab = dataset.vocab
    model = family.build(model_config, vocab.n_users, vocab.n_items, 0.6)
    init_parameters(model, torch.Generator().manual_seed(0))
    training = dataclasses.replace(model_config.training, sparse_embeddings=True, max_epochs=3, patience=3,
                                   batch_size=128)
    train = family.training_inputs(dataset.train, model_config, vocab.n_items)
    objective = Objective(family.outputs, family.rank, family.penalty, family.with_items, vocab.n_items)
    result = fit(model, objective, train, train, training, torch.Generator().manual_seed(1), name)
    curve = [e["train_rmse"] for e in result.epochs]
    assert curve[-1] < curve[0]
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    assert tables and not any(t.sparse for t in tables)  # exported as ordinary embeddings


def test_sparse_gradients_are_chosen_by_table_size():
    config = RunConfig().mf.training
    small = FAMILIES["mf"].build(RunConfig().mf, 100, 50, 0.5)
    rows = SPARSE_EMBEDDING_PARAMETERS // (RunConfig().mf.dim + RunConfig().mf.rank_dim)
    large = FAMILIES["mf"].build(RunConfig().mf, rows, 50, 0.5)
    assert not Optimizer(small, config).sparse
    assert Optimizer(large, config).sparse
    assert not Optimizer(large, dataclasses.replace(config, sparse_embeddings=False)).sparse
