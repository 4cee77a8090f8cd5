"""Cutting the dense net's embeddings to a smaller rank: the cut net computes exactly what the net
does on the best approximations of that rank of its tables, and a fit cuts a low-rank catalogue."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from export.config import RunConfig
from export.data.loading import build_dataset
from export.data.synthetic import generate_ratings
from export.models import registry
from export.models.base import init_parameters
from export.models.dense import DenseNet, cut_rank
from export.training.trainer import train_model

N_USERS, N_ITEMS, DIM = 30, 20, 8
COPIED = ("user_bias.weight", "item_bias.weight", "output.weight", "output.bias", "hidden.bias",
          "rank_user_embedding.weight", "rank_item_embedding.weight", "rank_item_bias.weight", "global_mean")


def random_net(n_items: int = N_ITEMS, seed: int = 0) -> DenseNet:
    model = DenseNet(N_USERS, n_items, DIM, 16, 3, 0.5)
    init_parameters(model, torch.Generator().manual_seed(seed))
    with torch.no_grad():   # the initial scale is small: make every term of the net count
        for table in (model.user_embedding, model.item_embedding):
            table.weight.mul_(20)
    return model.eval()


def every_pair(n_items: int = N_ITEMS) -> tuple[torch.Tensor, torch.Tensor]:
    users, items = torch.meshgrid(torch.arange(N_USERS), torch.arange(n_items), indexing="ij")
    return users.reshape(-1), items.reshape(-1)


def best_approximation(table: torch.Tensor, rank: int) -> torch.Tensor:
    u, s, v_t = torch.linalg.svd(table.double(), full_matrices=False)
    return ((u[:, :rank] * s[:rank]) @ v_t[:rank]).float()


def test_a_cut_at_the_full_rank_keeps_every_rating_and_every_ranking_logit():
    model = random_net()
    cut = cut_rank(model, DIM)
    users, items = every_pair()
    with torch.no_grad():
        for before, after in zip(model(users, items), cut(users, items)):
            assert before.std() > 0.05   # a test of the terms, not of the biases
            torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_a_cut_computes_the_net_on_the_best_approximations_of_its_tables_with_the_rest_copied():
    model = random_net(seed=1)
    cut = cut_rank(model, 3)
    assert cut.user_embedding.embedding_dim == 3 and cut.hidden.in_features == 6
    assert cut.rank_bilinear.weight.shape == (3, 3)
    approximated = random_net(seed=1)
    with torch.no_grad():
        for table in ("user_embedding", "item_embedding"):
            getattr(approximated, table).weight.copy_(best_approximation(getattr(model, table).weight, 3))
    users, items = every_pair()
    with torch.no_grad():
        for expected, actual, original in zip(approximated(users, items), cut(users, items), model(users, items)):
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
            assert (actual - original).abs().max() > 1e-2   # rank 3 is an approximation here
    for name in COPIED:
        torch.testing.assert_close(cut.state_dict()[name], model.state_dict()[name], rtol=0, atol=0)


def test_a_cut_past_a_tables_own_rank_pads_with_zero_columns():
    model = random_net(n_items=5)
    cut = cut_rank(model, DIM)   # the item table is 5 x 8: rank 5 at most
    assert cut.item_embedding.weight.shape == (5, DIM) and not cut.item_embedding.weight[:, 5:].any()
    users, items = every_pair(5)
    with torch.no_grad():
        for before, after in zip(model(users, items), cut(users, items)):
            torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_the_fit_cuts_the_dense_net_on_a_planted_low_rank_catalogue_and_the_config_rebuilds_it():
    frame = generate_ratings(150, 80, 6_000, seed=3)   # planted rank 4 (of the ratings)
    config = RunConfig(seed=5).replace_training(max_epochs=15, batch_size=256)
    dataset = build_dataset([frame], config, np.random.default_rng(0))
    trained = train_model("dense", dataset, config, seed=7)
    family = registry.get("dense")
    cuts = trained.fit.cuts
    # The ranking loss reaches the dense net's embeddings, and which pairs this generator rates is
    # not of low rank, so the cut keeps the directions the lists need too (52 of 64 here; MF, whose
    # ranking head is detached, is cut to the planted rank in test_rank_cut).
    assert cuts and cuts[0]["from_rank"] == 64 and cuts[-1]["to_rank"] < 64
    assert all(c["validation_rmse_after"] <= c["validation_rmse_before"] * (1 + 1e-4) for c in cuts)
    assert trained.config.dim == family.rank(trained.module) == cuts[-1]["to_rank"]
    recorded = family.config_from_dict(dataclasses.asdict(trained.config))
    rebuilt = family.build(recorded, dataset.vocab.n_users, dataset.vocab.n_items, 0.0)
    rebuilt.load_state_dict(trained.module.state_dict())
