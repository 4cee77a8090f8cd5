"""The item autoencoder: its closed form is the ridge regression it states, its penalties are
chosen on validation ratings, and a catalogue past its limit is refused before training."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from contract.errors import UsageError
from export.config import RunConfig
from export.data.dataset import Interactions
from export.data.loading import build_dataset
from export.data.synthetic import planted_blocks
from export.models import registry
from export.models.item_ae import AVERAGE_FLOOR, choose, solve
from export.pipeline import models_for_data
from export.training.closed_form import Ridge, fit_biases

FAMILY = registry.get("item_ae")


def ratings(rows: list[tuple[int, int, float]]) -> Interactions:
    users, items, stars = (np.array(c) for c in zip(*rows))
    return Interactions(users.astype(np.int64), items.astype(np.int64), stars.astype(np.float32),
                        np.arange(len(rows), dtype=np.int64))


HAND = ratings([(0, 0, 5), (0, 1, 4), (1, 1, 2), (1, 2, 5), (2, 0, 3), (2, 2, 1), (2, 3, 4), (3, 0, 5),
                (3, 1, 5), (3, 2, 4), (4, 2, 2), (4, 3, 5)])


def test_ranking_weights_are_the_constrained_ridge_regression_of_each_item_on_the_others():
    # Each column j minimises ||x_j - X b||^2 + l2 ||b||^2 with b_j = 0, X the users' rows of
    # ratings on [0, 1]: solved directly, one item at a time.
    x = np.zeros((5, 4))
    x[HAND.users, HAND.items] = HAND.unit
    l2 = 0.7
    weights = Ridge.of(HAND.users, HAND.items, HAND.unit.astype(np.float64), 5, 4).weights(l2).numpy()
    for j in range(4):
        others = [k for k in range(4) if k != j]
        a = x[:, others]
        np.testing.assert_allclose(weights[others, j], np.linalg.solve(a.T @ a + l2 * np.eye(3), a.T @ x[:, j]),
                                   rtol=1e-9, atol=1e-12)
        assert weights[j, j] == 0


def test_the_module_scores_the_history_through_the_solved_weights():
    config = dataclasses.replace(FAMILY.default_config(), rank_l2=(2.0,), rating_shrink=(1.5,), history=3)
    model = solve(config, HAND, 5, 4)
    unit = HAND.unit.astype(np.float64)
    biases = fit_biases(HAND.users, HAND.items, unit, 5, 4, config.bias_l2)
    x, e, rated = np.zeros((5, 4)), np.zeros((5, 4)), np.zeros((5, 4))
    x[HAND.users, HAND.items] = unit
    e[HAND.users, HAND.items] = unit - biases.of(HAND.users, HAND.items)
    rated[HAND.users, HAND.items] = 1
    rank = Ridge.of(HAND.users, HAND.items, unit, 5, 4).weights(2.0).numpy()
    # The rating's similarities: cosine of the residual columns, shrunk by co-raters, squared with sign.
    cosine = (e.T @ e) / np.outer(np.linalg.norm(e, axis=0), np.linalg.norm(e, axis=0))
    common = rated.T @ rated
    s = cosine * common / (common + 1.5)
    np.fill_diagonal(s, 0)
    rate = s * np.abs(s)
    # User 2's three ratings are its whole history (item 3 latest); user 0's two are padded.
    history = torch.tensor([[0, 2, 3], [4, 0, 1]])
    values = torch.tensor([[unit[4], unit[5], unit[6]], [0.0, unit[0], unit[1]]], dtype=torch.float32)
    users = torch.tensor([2, 0])
    core = FAMILY.all_items_core(model)
    with torch.no_grad():
        got_unit, got_logit = core(users, history, values)
    for row, user in enumerate((2, 0)):
        expected_logit = x[user] @ rank + model.rank_offset.numpy()
        expected_unit = (biases.mean + biases.users[user] + biases.items
                         + e[user] @ rate / (AVERAGE_FLOOR + rated[user] @ np.abs(rate)))
        np.testing.assert_allclose(got_logit[row].numpy(), expected_logit, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got_unit[row].numpy(), expected_unit, rtol=0, atol=1e-5)


def test_penalties_are_chosen_on_validation_ratings_and_recorded():
    frame, _ = planted_blocks(120, 60, 3, seed=4, own_share=0.6, other_share=0.1, noise=0.3)
    config = RunConfig(seed=1, models=("item_ae",))
    dataset = build_dataset([frame], config, np.random.default_rng(0))
    chosen = choose(config.model_config("item_ae"), dataset.train, dataset.validation,
                    dataset.vocab.n_users, dataset.vocab.n_items)
    ndcg = chosen.choices["validation_ndcg_at_10"]
    rmse = chosen.choices["validation_rmse_unit"]
    assert chosen.rank_l2[0] == max(chosen.rank_l2, key=lambda v: ndcg[f"{v:g}"])
    assert chosen.rating_shrink[0] == min(chosen.rating_shrink, key=lambda v: rmse[f"{v:g}"])
    assert sorted(chosen.rank_l2) == sorted(FAMILY.default_config().rank_l2)
    assert min(ndcg.values()) > 0.35   # the planted blocks are found (random weights score 0.12-0.14)


def test_a_catalogue_past_the_limit_is_refused_when_asked_for_and_left_out_otherwise(caplog):
    frame, _ = planted_blocks(40, 30, 2, seed=4, own_share=0.6, other_share=0.1, noise=0.3)
    small = dataclasses.replace(FAMILY.default_config(), max_items=20)
    config = RunConfig(seed=1, models=("mf", "item_ae"), model_configs={"item_ae": small})
    dataset = build_dataset([frame], config, np.random.default_rng(0))
    with pytest.raises(UsageError, match=r"catalogue has 30 items, and item_ae accepts at most 20"):
        models_for_data(config, dataset, models_given=True)
    assert models_for_data(config, dataset, models_given=False).models == ("mf",)
    assert "item_ae accepts at most 20" in caplog.text
