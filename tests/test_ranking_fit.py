"""The ranking fit: it trains the ranking head alone (ratings unchanged), keeps the epoch with
the best validation NDCG@10, replays that many epochs on training and validation ratings; its
softmax over a sample scores the same loss as over the catalogue where the sample is the
catalogue, and its squared loss (implicit feedback) is each user's weighted row error."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bias_family import FAMILY as BIAS_FAMILY
from export.config import RunConfig
from export.data.loading import build_dataset
from export.data.synthetic import planted_blocks
from export.models import registry
from export.models.base import init_parameters
from export.training.ranking_fit import (_examples, _loss, _sample, fit_ranking, fits_ranking, pass_throughput,
                                         ranking_state, refit_ranking)
from export.training.ranking_metric import ndcg_of
from export.training.trainer import train_model

FAMILIES = ("mf", "dense", "lstm")


def planted(seed: int = 4):
    frame, truth = planted_blocks(150, 60, 3, seed=seed, own_share=0.5, other_share=0.15, noise=0.3)
    return frame, truth


def module_for(name: str, dataset, seed: int = 0):
    family = registry.get(name)
    config = family.default_config()
    module = family.build(config, dataset.vocab.n_users, dataset.vocab.n_items, float(dataset.train.unit.mean()))
    init_parameters(module, torch.Generator().manual_seed(seed))
    return family, config, module


@pytest.mark.parametrize("loss", ("softmax", "squared"))
@pytest.mark.parametrize("name", FAMILIES)
def test_the_ranking_fit_moves_only_the_heads_own_parameters_and_improves_validation_ndcg(name, loss):
    frame, _ = planted()
    dataset = build_dataset([frame], RunConfig(seed=1, models=(name,)), np.random.default_rng(0))
    family, config, module = module_for(name, dataset)
    if loss == "squared":   # implicit feedback's settings
        config = family.implicit_config(config)
    assert config.training.rank_loss == loss
    training = dataclasses.replace(config.training, rank_fit_patience=2, max_epochs=30)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    result = fit_ranking(module, family, dataset.train, dataset.validation, training, torch.Generator().manual_seed(0),
                         name)
    head = set(family.ranking_parameters(module))
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k not in head)
    assert result.best_epoch > 0 and result.best_ndcg > result.initial_ndcg
    if loss == "squared":   # sweeps lower the objective to convergence, and the last is kept
        losses = [e["train_loss"] for e in result.epochs]
        assert result.best_epoch == len(result.epochs) > 2
        assert all(later <= earlier * (1 + 1e-9) for earlier, later in zip(losses, losses[1:]))
        assert losses[-2] - losses[-1] <= training.rank_tolerance * losses[-2]
    else:   # the best epoch is kept, and patience ran out after it
        assert result.best_ndcg == max(e["validation_ndcg_at_10"] for e in result.epochs)
        assert len(result.epochs) <= result.best_epoch + training.rank_fit_patience


def test_the_refit_replays_the_best_epochs_count_and_a_fit_that_beat_nothing_refits_nothing():
    frame, _ = planted()
    dataset = build_dataset([frame], RunConfig(seed=1, models=("mf",)), np.random.default_rng(0))
    family, config, module = module_for("mf", dataset)
    training = dataclasses.replace(config.training, rank_fit_patience=2, max_epochs=30)
    result = fit_ranking(module, family, dataset.train, dataset.validation, training, torch.Generator().manual_seed(0),
                         "mf")
    both = dataset.train.concat(dataset.validation)
    refit_ranking(module, family, both, result, training, torch.Generator().manual_seed(0), "mf")
    assert result.refit_epochs == result.best_epoch > 0
    nothing = dataclasses.replace(result, best_epoch=0, refit_epochs=0)
    head = ranking_state(module, family)
    refit_ranking(module, family, both, nothing, training, torch.Generator().manual_seed(0), "mf")
    assert nothing.refit_epochs == 0
    assert all(torch.equal(head[k], v) for k, v in ranking_state(module, family).items())


def test_a_sample_that_holds_the_whole_catalogue_scores_the_full_softmax():
    frame, _ = planted()
    dataset = build_dataset([frame], RunConfig(seed=1, models=("mf",)), np.random.default_rng(0))
    family, config, module = module_for("mf", dataset)
    users, items = torch.as_tensor(dataset.train.users[:64]), torch.as_tensor(dataset.train.items[:64])
    weights = torch.as_tensor(dataset.train.unit[:64])
    full = _loss(module, family, users, items, weights, 1e-3, None)
    # every item once: the rated item is masked among them and scored first, the same logits
    every = _loss(module, family, users, items, weights, 1e-3, torch.arange(dataset.vocab.n_items))
    assert float(every.detach()) == pytest.approx(float(full.detach()), rel=1e-5)
    assert _sample(dataset.vocab.n_items, config.training, torch.Generator()) is None
    small = dataclasses.replace(config.training, rank_candidates=10)
    drawn = _sample(dataset.vocab.n_items, small, torch.Generator().manual_seed(0))
    assert drawn.shape == (10,) and int(drawn.max()) < dataset.vocab.n_items


@pytest.mark.parametrize("implicit", (False, True))
def test_a_pass_covers_every_training_row_once_and_the_bench_rate_counts_them(implicit):
    frame, _ = planted()
    dataset = build_dataset([frame], RunConfig(seed=1, models=("mf",)), np.random.default_rng(0))
    family, config, module = module_for("mf", dataset)
    training = (family.implicit_config(config) if implicit else config).training
    examples = _examples(dataset.train, module, family, training)
    _, out_of_time, rows = examples.epoch(module, family, torch.Generator(), None)
    assert not out_of_time and rows == int((dataset.train.unit > 0).sum())
    assert pass_throughput(module, family, dataset.train, training, torch.Generator(), 60.0) > 0


def test_a_family_without_a_product_head_is_left_to_its_joint_loss():
    family = BIAS_FAMILY
    module = family.build(family.default_config(), 5, 4, 0.5)
    assert not fits_ranking(module, family, family.default_config().training)
    mf = registry.get("mf")
    mf_module = mf.build(mf.default_config(), 5, 4, 0.5)
    assert fits_ranking(mf_module, mf, mf.default_config().training)
    assert not fits_ranking(mf_module, mf, dataclasses.replace(mf.default_config().training, rank_fit_patience=0))


def test_ndcg_of_leaves_seen_items_out_and_averages_over_users_with_a_relevant_item():
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])

    def chunks(users):
        yield users, scores[users].copy()

    # user 0 saw item 0, so its list is 1, 2, 3 and its relevant item 2 is second
    value = ndcg_of(chunks, (np.array([0]), np.array([0])), (np.array([0, 1]), np.array([2, 3])), 4, k=3)
    assert value == pytest.approx((1 / np.log2(3) + 1.0) / 2)


def test_training_records_the_ranking_fit_and_its_ratings_match_a_run_without_it():
    frame, _ = planted(seed=5)
    config = RunConfig(seed=1, models=("mf",)).replace_training(max_epochs=4)
    dataset = build_dataset([frame], config, np.random.default_rng(0))
    with_fit = train_model("mf", dataset, config, 7)
    without = train_model("mf", dataset, config.replace_training(rank_fit_patience=0), 7)
    assert with_fit.fit.ranking is not None and without.fit.ranking is None
    assert with_fit.test_metrics == without.test_metrics
