"""Cutting MF's rating factors to a smaller rank: the cut is the best approximation of that rank,
the fit finds the rank a catalogue has on its validation split, and a fresh refit cuts alike."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from export.config import RunConfig
from export.data.loading import build_dataset
from export.data.synthetic import generate_ratings
from export.models import registry
from export.models.base import init_parameters
from export.models.mf import BiasedMF, cut_rank
from export.training.rank_cut import cut_within, smallest_cut
from export.training.validation import validation_rmse
from export.training.trainer import train_model

N_USERS, N_ITEMS, DIM = 30, 20, 8


def planted_model(rank: int, seed: int = 0, noise: float = 0.0) -> BiasedMF:
    """An MF of ``DIM`` columns whose product ``P Q^T`` has rank ``rank`` (plus ``noise``)."""
    generator = torch.Generator().manual_seed(seed)
    model = BiasedMF(N_USERS, N_ITEMS, DIM, 3, 0.5)
    init_parameters(model, generator)
    mix = torch.randn(rank, DIM, generator=generator) * 0.3   # ratings stay inside [0, 1]
    with torch.no_grad():
        model.user_embedding.weight.copy_(0.3 * torch.randn(N_USERS, rank, generator=generator) @ mix
                                          + noise * torch.randn(N_USERS, DIM, generator=generator))
        model.item_embedding.weight.copy_(0.3 * torch.randn(N_ITEMS, rank, generator=generator) @ mix
                                          + noise * torch.randn(N_ITEMS, DIM, generator=generator))
        model.user_bias.weight.normal_(0, 0.1, generator=generator)
        model.item_bias.weight.normal_(0, 0.1, generator=generator)
    return model.eval()


def every_pair() -> tuple[torch.Tensor, torch.Tensor]:
    users, items = torch.meshgrid(torch.arange(N_USERS), torch.arange(N_ITEMS), indexing="ij")
    return users.reshape(-1), items.reshape(-1)


def product(model: BiasedMF) -> torch.Tensor:
    return (model.user_embedding.weight @ model.item_embedding.weight.T).detach().double()


def test_a_cut_at_the_full_rank_keeps_every_rating_and_a_uniform_scale_keeps_every_ranking_logit():
    model = planted_model(rank=DIM)
    with torch.no_grad():
        model.rank_scale.fill_(0.7)
    cut = cut_rank(model, DIM)
    users, items = every_pair()
    with torch.no_grad():
        for before, after in zip(model(users, items), cut(users, items)):
            torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cut.rank_scale, torch.full((DIM,), 0.7), rtol=1e-4, atol=1e-5)


def test_a_cut_is_the_best_approximation_of_its_rank_with_the_rest_of_the_model_copied():
    model = planted_model(rank=DIM, seed=1)
    u, s, v_t = torch.linalg.svd(product(model))
    cut = cut_rank(model, 3)
    assert cut.user_embedding.embedding_dim == 3
    torch.testing.assert_close(product(cut), (u[:, :3] * s[:3]) @ v_t[:3], rtol=1e-4, atol=1e-4)
    for name in ("user_bias.weight", "item_bias.weight", "rank_user_embedding.weight", "rank_item_embedding.weight",
                 "rank_item_bias.weight", "global_mean"):
        torch.testing.assert_close(cut.state_dict()[name], model.state_dict()[name], rtol=0, atol=0)
    # the new factors share each direction evenly: both Gram matrices are diag(S)
    for factors in (cut.user_embedding.weight, cut.item_embedding.weight):
        torch.testing.assert_close((factors.T @ factors).detach().double(), torch.diag(s[:3]), rtol=1e-3, atol=1e-3)


def test_a_cut_past_the_products_own_rank_pads_with_zero_columns():
    model = BiasedMF(4, 3, 6, 2, 0.5)
    init_parameters(model, torch.Generator().manual_seed(0))
    cut = cut_rank(model, 6)   # P Q^T is 4 x 3: rank 3 at most
    assert cut.item_embedding.weight.shape == (3, 6)
    assert not cut.item_embedding.weight[:, 3:].any() and not cut.user_embedding.weight[:, 3:].any()
    torch.testing.assert_close(product(cut), product(model), rtol=1e-4, atol=1e-6)


def test_the_smallest_cut_within_the_limit_is_the_planted_rank():
    family = registry.get("mf")
    model = planted_model(rank=3, noise=1e-3)
    users, items = every_pair()
    with torch.no_grad():
        targets = model(users, items)[0].clamp(0, 1)   # as clipped predictions are scored
    validation = ((users, items), targets)
    assert validation_rmse(model, family, validation) < 1e-6
    cut, rmse = smallest_cut(model, family, validation, limit=0.01)
    assert family.rank(cut) == 3 and rmse == validation_rmse(cut, family, validation) <= 0.01
    assert smallest_cut(model, family, validation, limit=0.0) is None   # no smaller rank is exact


def test_factors_that_carry_nothing_yet_are_not_cut_to_rank_one():
    family = registry.get("mf")
    users, items = every_pair()
    for scale, expected_rank in ((1.0, 3), (1e-4, None)):   # planted rank 3, then too small to matter
        model = planted_model(rank=3, noise=1e-3)
        with torch.no_grad():
            model.user_embedding.weight.mul_(scale)
            targets = model(users, items)[0].clamp(0, 1)
        validation = ((users, items), targets)
        found = cut_within(model, family, validation, best_rmse=0.01, min_improvement=0.0)
        assert (None if found is None else family.rank(found[0])) == expected_rank
    assert family.rank(smallest_cut(model, family, validation, limit=0.01)[0]) == 1   # what cut_within declines


def test_the_fit_cuts_a_planted_low_rank_catalogue_and_the_bundle_config_rebuilds_it():
    frame = generate_ratings(150, 80, 6_000, seed=3)   # planted rank 4
    config = RunConfig(seed=5).replace_training(max_epochs=15, batch_size=256)
    dataset = build_dataset([frame], config, np.random.default_rng(0))
    trained = train_model("mf", dataset, config, seed=7)
    family = registry.get("mf")
    cuts = trained.fit.cuts
    assert cuts and cuts[0]["from_rank"] == 128 and cuts[-1]["to_rank"] <= 8
    assert all(c["validation_rmse_after"] <= c["validation_rmse_before"] * (1 + 1e-4) for c in cuts)
    assert trained.config.dim == family.rank(trained.module) == cuts[-1]["to_rank"]
    rebuilt = family.build(trained.config, dataset.vocab.n_users, dataset.vocab.n_items, 0.0)
    rebuilt.load_state_dict(trained.module.state_dict())
    # the fresh refit replayed the cuts: its epochs after each cut trained the cut rank
    ranks = [e["rank"] for e in trained.fit.refit_epochs]
    assert ranks[0] == 128 and ranks[-1] == trained.config.dim and ranks == sorted(ranks, reverse=True)
    uncut = config.replace_training(rank_cut=False, max_epochs=2, decay_steps=0)
    plain = train_model("mf", dataset, uncut, seed=7)
    assert plain.fit.cuts == [] and plain.config.dim == 128


def test_a_plateau_cuts_the_best_weights_and_the_phase_goes_on_at_the_cut_rank():
    frame = generate_ratings(150, 80, 6_000, seed=3)   # planted rank 4
    config = RunConfig(seed=5).replace_training(max_epochs=12, batch_size=256, learning_rate=1.5e-2, decay_steps=0)
    dataset = build_dataset([frame], config, np.random.default_rng(0))
    trained = train_model("mf", dataset, config, seed=7)
    first = trained.fit.cuts[0]
    assert first["from_rank"] == 128 and first["at_epoch"] > first["after_epoch"]   # decided at a plateau
    ranks = [e["rank"] for e in trained.fit.epochs]
    assert set(ranks[:first["at_epoch"]]) == {128} and ranks[first["at_epoch"]] == first["to_rank"]
    assert len(trained.fit.epochs) > first["at_epoch"] + 1   # the phase went on, cut
    # each epoch's weights are offered once: cuts of the same weights would add up their tolerances
    assert len({c["after_epoch"] for c in trained.fit.cuts}) == len(trained.fit.cuts)
    # the path leads from the cut weights on: the epochs after them up to the plateau are not replayed
    refit_ranks = [e["rank"] for e in trained.fit.refit_epochs]
    assert refit_ranks.count(128) == first["after_epoch"]
    assert registry.get("mf").rank(trained.module) == trained.config.dim == trained.fit.cuts[-1]["to_rank"]


def test_no_cut_before_the_validation_rmse_has_fallen_the_required_share_below_the_first_epoch_s():
    # Before the factors have learnt the taste every rank rates alike: the cut waits for a gain.
    frame = generate_ratings(150, 80, 6_000, seed=3)   # planted rank 4
    config = RunConfig(seed=5).replace_training(max_epochs=12, batch_size=256, learning_rate=1.5e-2, decay_steps=0)
    dataset = build_dataset([frame], config, np.random.default_rng(0))
    cut = train_model("mf", dataset, config, seed=7).fit
    first_rmse = cut.epochs[0]["validation_rmse"]
    gain = 1.0 - cut.cuts[0]["validation_rmse_before"] / first_rmse
    assert gain >= config.model_config("mf").training.rank_cut_min_gain
    waiting = train_model("mf", dataset, config.replace_training(rank_cut_min_gain=gain + 0.01), seed=7).fit
    assert all(1.0 - c["validation_rmse_before"] / first_rmse >= gain + 0.01 for c in waiting.cuts)
    assert not waiting.cuts or waiting.cuts[0]["after_epoch"] > cut.cuts[0]["after_epoch"]
    unreachable = train_model("mf", dataset, config.replace_training(rank_cut_min_gain=0.9), seed=7).fit
    assert unreachable.cuts == [] and {e["rank"] for e in unreachable.epochs} == {128}


def test_families_without_a_rank_are_never_cut_and_refuse_a_cut():
    frame = generate_ratings(60, 40, 1_500, seed=5)
    config = RunConfig(seed=5).replace_training(max_epochs=2, decay_steps=0, rank_cut=True)
    dataset = build_dataset([frame], config, np.random.default_rng(0))
    trained = train_model("lstm", dataset, config, seed=7)
    family = registry.get("lstm")
    assert family.rank(trained.module) is None and trained.fit.cuts == []
    assert "rank" not in trained.fit.epochs[0] and trained.config == config.model_config("lstm")
    with pytest.raises(TypeError, match="no rank to cut"):
        family.cut(trained.module, 2)
