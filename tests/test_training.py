"""Training: the refits on training + validation, models trained side by side in worker processes
and exported as they arrive, and sparse embedding gradients for large tables."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from export.config import RunConfig
from export.families import FAMILIES, init_parameters
from export.loading import build_dataset
from export.pipeline import build_bundle, train_model
from export.synthetic import generate_ratings
from export.training import SPARSE_EMBEDDING_PARAMETERS, Objective, Optimizer, fit
from export.workers import train_models
from scoring import bundle as layout
from scoring.bundle import read_manifest
from scoring.errors import LockError
from scoring.publish import STAGING_PREFIX, RootLock


def with_training(config: RunConfig, name: str, **changes) -> RunConfig:
    model = config.model_config(name)
    return dataclasses.replace(config, **{name: dataclasses.replace(
        model, training=dataclasses.replace(model.training, **changes))})


@pytest.fixture(scope="module")
def dataset():
    config = RunConfig()
    return build_dataset([generate_ratings(60, 40, 1_500, seed=5)], config, np.random.default_rng(0))


@pytest.mark.parametrize("name", ["mf", "dense", "lstm"])
def test_refits_train_on_training_and_validation_for_the_epochs_they_promise(dataset, name):
    config = with_training(RunConfig(), name, max_epochs=4, patience=2, batch_size=256, continue_epochs=3)
    kept = {refit: train_model(name, dataset, with_training(config, name, refit=refit), seed=11)
            for refit in ("none", "fresh", "continue")}
    assert kept["none"].fit.refit_epochs == []
    assert kept["none"].fit.best_epoch >= 1
    for refit in ("fresh", "continue"):  # the same first fit chose the epoch
        assert kept[refit].fit.best_epoch == kept["none"].fit.best_epoch
        assert kept[refit].fit.epochs == kept["none"].fit.epochs
    assert len(kept["fresh"].fit.refit_epochs) == kept["none"].fit.best_epoch
    assert len(kept["continue"].fit.refit_epochs) == 3
    # the kept model is the refit one, and continuing is not starting afresh
    metrics = [kept[refit].test_metrics["rmse_unit"] for refit in ("none", "fresh", "continue")]
    assert len(set(metrics)) == 3


def test_an_unknown_refit_is_named(dataset):
    config = with_training(RunConfig(), "mf", refit="warm")
    with pytest.raises(ValueError, match=r"mf training refit: expected one of \['fresh', 'continue', 'none'\], got 'warm'"):
        train_model("mf", dataset, config, seed=11)


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


def test_each_model_is_exported_as_it_arrives_under_a_lock_taken_before_training(dataset, tmp_path):
    config = RunConfig(models=("mf", "dense"))
    for name in config.models:
        config = with_training(config, name, max_epochs=1, batch_size=256)

    def finishing_order():  # what trained_as_completed yields: models in the order they finish
        with pytest.raises(LockError, match="another run"):
            RootLock(tmp_path).__enter__()
        yield train_model("dense", dataset, config, seed=1)
        (staging,) = tmp_path.glob(STAGING_PREFIX + "*")
        assert (staging / layout.pairwise_graph_file("dense")).is_file()   # exported before mf trained
        assert not (staging / layout.pairwise_graph_file("mf")).exists()
        yield train_model("mf", dataset, config, seed=2)

    bundle = build_bundle(dataset, finishing_order(), config, "0" * 64, {}, tmp_path)
    assert sorted(read_manifest(bundle)["models"]) == ["dense", "mf"]
    assert set(np.load(bundle / layout.REFERENCE)) == {f"{m}_{k}" for m in ("mf", "dense")
                                                       for k in ("users", "items", "scores", "ranks")}
    with RootLock(tmp_path):   # released after publishing
        pass


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
