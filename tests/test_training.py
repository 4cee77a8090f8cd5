"""Training: the refits on training + validation, models trained side by side in worker processes
and exported as they arrive, and sparse embedding gradients for large tables."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from contract import bundle_format as layout
from contract.errors import ConfigError, LockError
from contract.publish import STAGING_PREFIX, RootLock
from export.bundle import build_bundle
from export.config import RunConfig
from export.data.loading import build_dataset
from export.data.synthetic import generate_ratings
from export.models import registry
from export.models.base import init_parameters
from export.training.config import TrainingConfig
from export.training.epoch import Objective, batch_loss
from export.training.loop import fit
from export.training.validation import rmse_unit
from export.training.optimizer import SPARSE_EMBEDDING_PARAMETERS, Optimizer
from export.training.penalty import RowDecay, penalty_terms, row_decays
from export.training.row_adam import RowAdam
from export.training.trainer import train_model
from export.training import workers
from export.training.workers import SIDE_BY_SIDE_MIN_RATINGS, default_jobs, train_models
from scoring.bundle import read_manifest
from scoring.feeds import UserContext

pytestmark = pytest.mark.slow


def with_training(config: RunConfig, name: str, **changes) -> RunConfig:
    return config.replace_model(name, training=dataclasses.replace(config.model_config(name).training, **changes))


@pytest.fixture(scope="module")
def dataset():
    config = RunConfig()
    return build_dataset([generate_ratings(60, 40, 1_500, seed=5)], config, np.random.default_rng(0))


def untimed(curve: list[dict]) -> list[dict]:
    """A learning curve without its wall times, which differ from run to run."""
    return [{k: v for k, v in epoch.items() if k != "train_seconds"} for epoch in curve]


@pytest.mark.parametrize("name", ["mf", "dense", "lstm"])
def test_refits_train_on_training_and_validation_for_the_epochs_they_promise(dataset, name):
    config = with_training(RunConfig(), name, max_epochs=4, patience=2, batch_size=256, continue_epochs=3)
    kept = {refit: train_model(name, dataset, with_training(config, name, refit=refit), seed=11)
            for refit in ("none", "fresh", "continue")}
    assert kept["none"].fit.refit_epochs == []
    assert kept["none"].fit.best_epoch >= 1
    for refit in ("fresh", "continue"):  # the same first fit chose the epoch
        assert kept[refit].fit.best_epoch == kept["none"].fit.best_epoch
        assert untimed(kept[refit].fit.epochs) == untimed(kept["none"].fit.epochs)
    assert len(kept["continue"].fit.refit_epochs) == 3
    best = kept["none"].fit.epochs[kept["none"].fit.best_epoch - 1]
    path = [{k: e[k] for k in ("learning_rate", "embedding_decay")} for e in kept["none"].fit.path]
    assert path[-1] == {k: best[k] for k in ("learning_rate", "embedding_decay")}
    replayed = [{k: e[k] for k in ("learning_rate", "embedding_decay")} for e in kept["fresh"].fit.refit_epochs]
    assert replayed == path   # a fresh refit replays the steps and decays that led to the kept weights
    continued = [{k: e[k] for k in ("learning_rate", "embedding_decay")} for e in kept["continue"].fit.refit_epochs]
    assert continued == [path[-1]] * 3   # a continued one goes on at the best epoch's
    family = registry.get(name)
    for refit in ("none", "fresh", "continue"):   # each kept module is as its trained config builds it
        rebuilt = family.build(kept[refit].config, dataset.vocab.n_users, dataset.vocab.n_items, 0.0)
        rebuilt.load_state_dict(kept[refit].module.state_dict())
        assert family.rank(rebuilt) == family.rank(kept["none"].module)   # cut (or not) alike
    # the kept model is the refit one, and continuing is not starting afresh
    metrics = [kept[refit].test_metrics["rmse_unit"] for refit in ("none", "fresh", "continue")]
    assert len(set(metrics)) == 3


def test_configs_check_themselves_when_built():
    with pytest.raises(ConfigError, match=r"training refit: expected one of \['fresh', 'continue', 'none'\], got 'warm'"):
        TrainingConfig(refit="warm")
    with pytest.raises(ConfigError, match=r"training rank_loss: expected one of \['softmax', 'squared'\], got 'hinge'"):
        TrainingConfig(rank_loss="hinge")
    with pytest.raises(ConfigError, match="training batch_size: expected a positive number, got 0"):
        TrainingConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"training min_improvement: expected a number in \[0, 1\), got 1"):
        TrainingConfig(min_improvement=1)
    for factor in (0.0, 1.5):
        with pytest.raises(ConfigError, match=r"training plateau_step_factor: expected a number in \(0, 1\]"):
            TrainingConfig(plateau_step_factor=factor)
    with pytest.raises(ConfigError, match="training plateau_step_floor: expected a number >= 0, got -1"):
        TrainingConfig(plateau_step_floor=-1)
    with pytest.raises(ConfigError, match="lstm window: expected an integer >= 2"):
        RunConfig().replace_model("lstm", window=1)
    with pytest.raises(ConfigError, match="split: expected three non-negative fractions that sum to 1"):
        RunConfig(split=(0.5, 0.1, 0.1))
    with pytest.raises(ConfigError, match="no model family is named 'svd'; registered: mf, dense, lstm"):
        RunConfig(models=("mf", "svd"))


def test_models_train_side_by_side_by_default_only_where_the_split_is_large_and_on_cpu(monkeypatch):
    monkeypatch.setattr(workers, "available_cpus", lambda: 2)
    four = RunConfig()   # the built-in families
    assert default_jobs(four, SIDE_BY_SIDE_MIN_RATINGS) == 2
    assert default_jobs(four, SIDE_BY_SIDE_MIN_RATINGS - 1) == 1
    assert default_jobs(RunConfig(models=("mf",)), 10 * SIDE_BY_SIDE_MIN_RATINGS) == 1
    assert default_jobs(dataclasses.replace(four, device="cuda"), 10 * SIDE_BY_SIDE_MIN_RATINGS) == 1
    monkeypatch.setattr(workers, "available_cpus", lambda: 16)
    assert default_jobs(four, SIDE_BY_SIDE_MIN_RATINGS) == 4


def test_models_trained_side_by_side_in_workers_equal_those_trained_one_after_another(dataset):
    config = RunConfig(models=("mf", "lstm"))
    for name in config.models:
        config = with_training(config, name, max_epochs=2, batch_size=256)
    in_process = train_models(dataset, config, jobs=1)
    in_workers = train_models(dataset, config, jobs=2)
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
        assert (staging / layout.graph_file("dense", "pairwise")).is_file()   # exported before mf trained
        assert not (staging / layout.graph_file("mf", "pairwise")).exists()
        yield train_model("mf", dataset, config, seed=2)

    bundle = build_bundle(dataset, finishing_order(), config, "0" * 64, {}, tmp_path)
    assert read_manifest(bundle)["model_names"] == ["mf", "dense"]   # the configured order, not the finishing one
    assert set(np.load(bundle / layout.REFERENCE)) == {
        f"{m}_{k}" for m in ("mf", "dense")
        for k in ("users", "items", "unit_ratings", "logits", "vector_items", "item_vectors")}
    with RootLock(tmp_path):   # released after publishing
        pass


def test_refit_is_skipped_when_the_time_budget_cut_the_fit_short(dataset):
    config = with_training(RunConfig(), "mf", max_epochs=3, batch_size=64, time_budget_s=0.0)
    trained = train_model("mf", dataset, config, seed=11)
    assert trained.fit.out_of_time and trained.fit.refit_epochs == []


def test_a_fresh_refit_cut_short_by_the_budget_is_dropped_for_the_early_stopped_model(dataset, monkeypatch):
    from export.training import trainer

    def cut_short(module, *args, **kwargs):
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.zero_()            # a fresh model part-way: nothing like the fitted one
        return module, [{"epoch": 1}], True

    monkeypatch.setattr(trainer, "refit", cut_short)
    config = with_training(RunConfig(), "mf", max_epochs=2, batch_size=256, refit="fresh", time_budget_s=1e6)
    trained = train_model("mf", dataset, config, seed=11)
    assert trained.fit.out_of_time and trained.fit.refit_epochs
    assert float(trained.module.user_embedding.weight.detach().abs().sum()) > 0   # the early-stopped weights


@pytest.mark.parametrize("name", ["mf", "dense", "lstm"])
def test_sparse_embedding_gradients_update_only_touched_rows_and_train_as_well_as_dense(dataset, name, monkeypatch):
    family = registry.get(name)
    model_config = RunConfig().model_config(name)
    vocab = dataset.vocab
    train = family.training_inputs(dataset.train, model_config, vocab.n_items)
    everything = (train[0].batch(torch.arange(len(train[0]))), train[1])
    gradients_sparse: list[bool] = []
    step = Optimizer.step

    def recording_step(self, decays=()):
        gradients_sparse.extend(t.weight.grad.is_sparse for t in self.tables if t.weight.grad is not None)
        step(self, decays)

    monkeypatch.setattr(Optimizer, "step", recording_step)
    rmse = {}
    for sparse in (True, False):
        model = family.build(model_config, vocab.n_users, vocab.n_items, float(dataset.train.unit.mean()))
        init_parameters(model, torch.Generator().manual_seed(0))
        training = dataclasses.replace(model_config.training, sparse_embeddings=sparse, max_epochs=4, patience=4,
                                       batch_size=128)
        model, _ = fit(model, Objective(family, vocab.n_items), train, everything, training, torch.Generator().manual_seed(1), name)
        rmse[sparse] = rmse_unit(family.predict(model, everything[0]), train[1])
        if sparse:
            assert gradients_sparse and all(gradients_sparse)   # every embedding step was row-sparse
            gradients_sparse.clear()
            tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
            assert tables and not any(t.sparse for t in tables)  # exported as ordinary embeddings
    baseline = rmse_unit(torch.full_like(train[1], float(train[1].mean())), train[1])
    assert rmse[True] < baseline - 0.01                       # it learned
    assert rmse[True] == pytest.approx(rmse[False], abs=0.02)  # about as well as dense updates


def test_row_wise_tables_are_the_large_tables_of_large_catalogues():
    """Small catalogues train every table whole; large ones train row by row each table with more
    rows than a batch has ratings; ``sparse_embeddings`` True or False overrides both."""
    mf = RunConfig().model_config("mf")
    family = registry.get("mf")
    small = family.build(mf, 100, 50, 0.5)
    users = SPARSE_EMBEDDING_PARAMETERS // (mf.dim + mf.rank_dim)
    large = family.build(mf, users, 2048, 0.5)
    user_tables = {large.user_embedding, large.user_bias, large.rank_user_embedding}
    assert Optimizer(small, mf.training, 1024, 1e-3, 0.0).row_wise == []
    assert set(Optimizer(large, mf.training, 1024, 1e-3, 0.0).row_wise) == user_tables | {
        large.item_embedding, large.item_bias, large.rank_item_embedding, large.rank_item_bias}
    optimizer = Optimizer(large, mf.training, 4096, 1e-3, 0.0)
    assert set(optimizer.row_wise) == user_tables
    assert set(optimizer.whole) == {large.item_embedding, large.item_bias, large.rank_item_embedding, large.rank_item_bias}
    assert all(t.sparse for t in large.modules() if isinstance(t, nn.Embedding))   # sparse gradients, summed for whole tables
    assert Optimizer(large, dataclasses.replace(mf.training, sparse_embeddings=False), 1024, 1e-3, 0.0).row_wise == []
    assert len(Optimizer(small, dataclasses.replace(mf.training, sparse_embeddings=True), 1024, 1e-3, 0.0).row_wise) == 7


@pytest.mark.parametrize("sparse", [None, True])
def test_a_step_with_some_tables_row_wise_equals_the_step_with_all_tables_whole(sparse):
    """Where only some tables train row by row, the others (and their penalty) take the whole-table
    step: the first step, from zero moments, is the same either way to float rounding."""
    mf = RunConfig().model_config("mf")
    family = registry.get("mf")
    config = family.with_training(mf, embedding_decay=0.05, bias_decay=0.01, sparse_embeddings=sparse)
    users = SPARSE_EMBEDDING_PARAMETERS // (mf.dim + mf.rank_dim)
    generator = torch.Generator().manual_seed(0)
    batch = (torch.randint(0, users, (64,), generator=generator), torch.randint(0, 40, (64,), generator=generator))
    targets = torch.rand(64, generator=generator)
    models = []
    for training in (config.training, dataclasses.replace(config.training, sparse_embeddings=False)):
        model = family.build(config, users, 40, 0.5)
        init_parameters(model, torch.Generator().manual_seed(1))
        optimizer = Optimizer(model, training, 64, 1e-2, training.weight_decay)
        objective = Objective(family, 40)
        loss, _ = batch_loss(model, objective, batch, targets, training, torch.Generator().manual_seed(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step(row_decays(penalty_terms(model, family, training), family, batch))
        optimizer.release()
        models.append(model)
    assert models[0].user_embedding.sparse is False
    for (key, ours), theirs in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.allclose(ours, theirs, atol=1e-6), key


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device (run on a GPU machine)"))]


@pytest.mark.parametrize("device", DEVICES)
def test_row_adam_steps_exactly_as_torch_sparse_adam(device):
    """Repeated rows summed, untouched rows and their moments left alone, bias correction by step."""
    generator = torch.Generator().manual_seed(0)
    ours, theirs = (nn.Embedding(7, 3, sparse=True).to(device) for _ in range(2))
    theirs.weight.data.copy_(ours.weight.data)
    row_adam = RowAdam([ours], lr=0.05)
    sparse_adam = torch.optim.SparseAdam([theirs.weight], lr=0.05)
    for _ in range(4):
        rows = torch.randint(0, 5, (6,), generator=generator).to(device)   # rows 5 and 6 never touched
        weights = torch.randn(6, 3, generator=generator).to(device)
        for table, optimizer in ((ours, row_adam), (theirs, sparse_adam)):
            optimizer.zero_grad()
            (table(rows) * weights).sum().backward()
            optimizer.step()
    assert torch.allclose(ours.weight, theirs.weight, atol=1e-6)
    assert torch.equal(ours.weight[5:], theirs.weight[5:])


def test_row_adam_steps_each_table_by_its_own_lookups_and_penalty_where_tables_share_ids():
    """Tables looked up by equal ids (a user's embedding and bias) share the rows found for them,
    whether or not a penalty names the same ids; each steps as lazy Adam written out by hand: the
    rows its lookups or its penalty name move, by its own gradient plus ``scale * count_r * row``."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(9, 3), (9, 1), (9, 2), (6, 3), (9, 1), (9, 2)]
    tables = [nn.Embedding(n, d, sparse=True) for n, d in shapes]
    expected = [t.weight.detach().clone() for t in tables]
    moments = [(torch.zeros_like(w), torch.zeros_like(w)) for w in expected]
    optimizer = RowAdam(tables, lr=0.05)
    for step in range(1, 4):
        users = torch.randint(0, 7, (8,), generator=generator)   # rows 7 and 8 never touched
        other_users = torch.randint(0, 7, (8,), generator=generator)
        items = torch.randint(0, 6, (8,), generator=generator)
        # tables 0, 1, 4 and 5 by equal (not the same) ids: 4 without a penalty, 5 with one on
        # other ids; 2 by other ids and the users' penalty; 3 by items
        lookups = [users, users.clone(), other_users, items, users.clone(), users.clone()]
        penalty = [users, users, users, items, None, other_users]
        weights = [torch.randn(8, d, generator=generator) for _, d in shapes]
        optimizer.zero_grad()
        sum((t(ids) * w).sum() for t, ids, w in zip(tables, lookups, weights)).backward()
        optimizer.step([RowDecay(t, ids, 0.1) for t, ids in zip(tables, penalty) if ids is not None])
        for weight, (mean, square), ids, w, named in zip(expected, moments, lookups, weights, penalty):
            grad = torch.zeros_like(weight).index_add_(0, ids, w)
            touched = torch.zeros(weight.shape[0], dtype=torch.bool)
            touched[ids] = True
            if named is not None:
                grad += 0.1 * torch.bincount(named, minlength=weight.shape[0])[:, None] * weight
                touched[named] = True
            mean[touched] = 0.9 * mean[touched] + 0.1 * grad[touched]
            square[touched] = 0.999 * square[touched] + 0.001 * grad[touched] ** 2
            denominator = square[touched].sqrt() / (1 - 0.999 ** step) ** 0.5 + 1e-8
            weight[touched] -= 0.05 / (1 - 0.9 ** step) * mean[touched] / denominator
    for table, weight in zip(tables, expected):
        torch.testing.assert_close(table.weight.detach(), weight, rtol=0, atol=1e-6)
    assert torch.equal(tables[0].weight[7:], expected[0][7:])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("name", ["mf", "lstm"])
def test_the_penalty_gradient_is_the_autograd_gradient_of_the_l2_penalty(name, sparse, device):
    """One step with the penalty added by the optimizer equals one step with the penalty in the loss."""
    family = registry.get(name)
    config = family.with_training(RunConfig().model_config(name), embedding_decay=0.05, bias_decay=0.01,
                                  rank_weight=0.0, sparse_embeddings=sparse)
    generator = torch.Generator().manual_seed(0)
    models = []
    for _ in range(2):
        model = family.build(config, 20, 15, 0.5)
        init_parameters(model, torch.Generator().manual_seed(1))
        models.append(model.to(device))
    n = 32
    users, items = torch.randint(0, 20, (n,), generator=generator), torch.randint(0, 15, (n,), generator=generator)
    context = UserContext(torch.randint(0, 16, (20, 9), generator=generator).numpy(),
                          torch.rand(20, 9, generator=generator).numpy())
    batch = family.pair_inputs(users.numpy(), items.numpy(), context if family.context_length(config) else None)
    batch = tuple(x.to(device) for x in batch)
    targets = torch.rand(n, generator=generator).to(device)
    objective = Objective(family, 15)
    for model, in_loss in zip(models, (True, False)):
        optimizer = Optimizer(model, config.training, n, 1e-2, config.training.weight_decay)
        terms = penalty_terms(model, family, config.training)
        loss, _ = batch_loss(model, objective, batch, targets, config.training, torch.Generator().manual_seed(2))
        if in_loss:
            p_users, p_items = family.penalty_ids(batch)
            loss = loss + sum(t.decay * (t.table(p_items if t.by_items else p_users) ** 2).sum(-1).mean() for t in terms)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step([] if in_loss else row_decays(terms, family, batch))
        optimizer.release()
    for (key, ours), theirs in zip(models[1].state_dict().items(), models[0].state_dict().values()):
        assert torch.allclose(ours, theirs, atol=1e-6), key
