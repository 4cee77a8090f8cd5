"""The implicit ranking fit's solver and its recency weights: each family's blocks score what its
head scores, the objective formed from the factors equals the pair-by-pair sum, each exact block
step leaves no gradient, conjugate gradient reaches the exact solve, a sweep never raises the
objective; recency counts, the latest split, and a recency weight chosen where order matters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

from contract.feedback import IMPLICIT_SCALE
from export.data.dataset import Interactions
from export.models import registry
from export.training import ranking_als
from export.training.ranking_als import WeightedPairs, _solve_items, _solve_scale, _solve_users, objective, sweep
from export.training.ranking_fit import _choose_recency, _Squared, _users_sample
from export.training.recency import has_order, latest_split, later_counts, recency_weights

FAMILIES = ("mf", "dense", "lstm")
N_USERS, N_ITEMS = 30, 25


def head(name: str, seed: int = 0):
    """A family's module with its head restarted and every block drawn at random."""
    family = registry.get(name)
    config = family.implicit_config(family.default_config())
    module = family.build(config, N_USERS, N_ITEMS, 0.5)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3, generator=generator)
        family.restart_ranking(module, generator)
        blocks = family.ranking_blocks(module)
        for block in (blocks.users, blocks.items, blocks.offsets, blocks.scale):
            if block is not None:
                block.copy_(torch.randn(block.shape, generator=generator) * 0.3)
    return family, module, config.training


def pairs_for(seed: int, uniform: bool) -> WeightedPairs:
    """Interactions of 25 of the 30 users (5 have none), each weighed 1 or at random."""
    rng = np.random.default_rng(seed)
    mask = rng.random((N_USERS, N_ITEMS)) < 0.2
    mask[25:] = False
    mask[np.arange(25), rng.integers(0, N_ITEMS, 25)] = True
    values = np.where(mask, 1.0 if uniform else rng.uniform(0.2, 4.0, mask.shape), 0.0)
    return WeightedPairs.of(sparse.csr_matrix(values), 1.0)


def dense_objective(family, module, pairs: WeightedPairs, decay: float) -> torch.Tensor:
    """The objective pair by pair, through the family's own ``ranking_factors``, differentiable."""
    users = torch.as_tensor(pairs.users)
    user, items, offsets = family.ranking_factors(module, users)
    logits = user.double() @ items.double().T + offsets.double()
    values = torch.as_tensor(pairs.by_user.toarray())
    weight = torch.where(values > 0, values, torch.ones_like(values))
    penalty = user.double().pow(2).sum() + family.ranking_blocks(module).items.double().pow(2).sum()
    return (weight * ((values > 0).double() - logits) ** 2).sum() + decay * penalty


@pytest.mark.parametrize("name", FAMILIES)
def test_the_blocks_score_what_the_family_head_scores(name):
    family, module, _ = head(name)
    blocks = family.ranking_blocks(module)
    users = torch.arange(N_USERS)
    user, items, offsets = family.ranking_factors(module, users)
    expected = user @ items.T + offsets
    got = blocks.users @ blocks.items.T + blocks.offsets
    if blocks.scale is not None:
        got = got + (blocks.read_users * blocks.scale) @ blocks.read_items.T
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("uniform", (True, False))
@pytest.mark.parametrize("name", FAMILIES)
def test_the_objective_from_the_factors_is_the_pair_by_pair_sum(name, uniform):
    family, module, training = head(name)
    pairs = pairs_for(1, uniform)
    with torch.no_grad():
        expected = float(dense_objective(family, module, pairs, training.rank_decay))
    assert objective(family.ranking_blocks(module), pairs, training.rank_decay) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", FAMILIES)
def test_each_exact_block_step_leaves_no_gradient_in_its_block(name):
    family, module, training = head(name)
    pairs = pairs_for(2, uniform=True)
    blocks = family.ranking_blocks(module)
    steps = [(_solve_users, "rank_user_embedding.weight"), (_solve_items, "rank_item_embedding.weight")]
    if blocks.scale is not None:
        steps.append((_solve_scale, "rank_scale"))
    parameters = dict(module.named_parameters())
    for step, parameter in steps:
        with torch.no_grad():
            step(blocks, pairs, training.rank_decay)
        module.zero_grad()
        dense_objective(family, module, pairs, training.rank_decay).backward()
        gradient = parameters[parameter].grad
        if parameter == "rank_user_embedding.weight":
            gradient = gradient[torch.as_tensor(pairs.users)]
        elif parameter == "rank_item_embedding.weight":
            gradient = gradient[:N_ITEMS]
        assert float(gradient.abs().max()) < 1e-3, parameter
    # users without interactions are left at zero
    assert float(blocks.users[25:].detach().abs().max()) == 0.0


@pytest.mark.parametrize("name", ("mf", "dense"))
def test_conjugate_gradient_reaches_the_exact_solve_with_enough_steps(name, monkeypatch):
    family, module, training = head(name)
    pairs = pairs_for(3, uniform=False)
    blocks = family.ranking_blocks(module)
    k = blocks.users.shape[1]
    start = {key: value.detach().clone() for key, value in module.state_dict().items()}
    monkeypatch.setattr(ranking_als, "CG_STEPS", 3 * k)
    with torch.no_grad():
        _solve_users(blocks, pairs, training.rank_decay)
    module.zero_grad()
    dense_objective(family, module, pairs, training.rank_decay).backward()
    gradient = dict(module.named_parameters())["rank_user_embedding.weight"].grad[torch.as_tensor(pairs.users)]
    assert float(gradient.abs().max()) < 1e-3
    # three steps, as shipped, get part of the way and never raise the objective
    module.load_state_dict(start)
    monkeypatch.setattr(ranking_als, "CG_STEPS", 3)
    before = objective(blocks, pairs, training.rank_decay)
    with torch.no_grad():
        _solve_users(blocks, pairs, training.rank_decay)
    assert objective(blocks, pairs, training.rank_decay) < before


@pytest.mark.parametrize("uniform", (True, False))
@pytest.mark.parametrize("name", FAMILIES)
def test_a_sweep_never_raises_the_objective_and_sweeps_converge(name, uniform):
    family, module, training = head(name)
    pairs = pairs_for(4, uniform)
    blocks = family.ranking_blocks(module)
    values = [objective(blocks, pairs, training.rank_decay)]
    for _ in range(30):
        sweep(blocks, pairs, training.rank_decay)
        values.append(objective(blocks, pairs, training.rank_decay))
    assert all(after <= before * (1 + 1e-9) for before, after in zip(values, values[1:]))
    assert values[-1] < 0.8 * values[0]
    assert values[-2] - values[-1] < 1e-3 * values[-1]


def interactions(users, items, timestamps, values=None) -> Interactions:
    n = len(users)
    return Interactions(np.asarray(users), np.asarray(items),
                        np.ones(n, np.float32) if values is None else np.asarray(values, np.float32),
                        np.asarray(timestamps, np.int64), IMPLICIT_SCALE)


def test_the_squared_examples_add_up_repeated_pairs_and_leave_zero_confidence_out():
    ratings = interactions([0, 0, 1, 2], [1, 1, 0, 2], [0, 0, 0, 0], [0.25, 0.5, 0.0, 1.0])
    training = registry.get("mf").implicit_config(registry.get("mf").default_config()).training
    examples = _Squared(ratings, 3, training, 0.0)
    assert examples.pairs.users.tolist() == [0, 2]
    assert examples.pairs.by_user.toarray().tolist() == [[0, 0.75, 0], [0, 0, 1.0]]
    assert not examples.pairs.uniform and examples.pairs.nnz == 2


def test_later_counts_the_same_users_later_interactions_and_ties_share_a_count():
    users = np.array([0, 1, 0, 0, 1, 0])
    times = np.array([5, 9, 1, 5, 3, 7])
    assert later_counts(users, times).tolist() == [1, 0, 3, 1, 1, 0]
    assert later_counts(np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []


def test_recency_weights_and_order():
    ratings = interactions([0, 0, 0], [0, 1, 2], [1, 2, 3])
    assert recency_weights(ratings, 0.0, 10.0).tolist() == [1.0, 1.0, 1.0]
    assert recency_weights(ratings, 2.0, 1.0) == pytest.approx([1 + 2 * np.exp(-2), 1 + 2 * np.exp(-1), 3.0])
    assert has_order(ratings) and not has_order(interactions([0, 1], [0, 1], [4, 4]))


def test_the_latest_split_holds_out_each_users_latest_tenth():
    users = np.repeat([0, 1], [20, 5])
    ratings = interactions(users, np.arange(25), np.arange(25))
    earlier, latest = latest_split(ratings)
    assert sorted(latest.items.tolist()) == [18, 19]   # user 0's latest two; user 1's five keep all
    assert len(earlier) == 23


def drifting(n_users: int = 120, seed: int = 0) -> Interactions:
    """Each user's first 16 interactions from one half of the catalogue, the last 8 from the user's
    group's quarter of the other half: the latest say where users are going."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for user in range(n_users):
        early = rng.choice(40, 16, replace=False)
        late = 40 + 10 * (user % 4) + rng.choice(10, 8, replace=False)
        users += [user] * 24
        items += [*early, *late]
        times += list(range(24))
    return interactions(users, items, times)


def test_a_recency_weight_is_chosen_where_the_latest_interactions_say_more():
    family = registry.get("dense")
    config = family.implicit_config(family.default_config())
    module = family.build(config, 120, 80, 0.5)
    ratings = drifting()
    weight, figures = _choose_recency(module, family, ratings, config.training, torch.Generator().manual_seed(0), None)
    assert set(figures) == {"0", "1", "3", "10"}
    assert weight > 0 and figures[f"{weight:g}"] > figures["0"]


def test_the_recency_choice_runs_on_a_seeded_sample_of_a_large_catalogues_users():
    ratings = interactions(np.repeat(np.arange(50), 3), np.tile([0, 1, 2], 50), np.tile([1, 2, 3], 50))
    assert _users_sample(ratings, 50, torch.Generator()) is ratings
    sample = _users_sample(ratings, 20, torch.Generator().manual_seed(0))
    assert len(np.unique(sample.users)) == 20 and len(sample) == 60
    again = _users_sample(ratings, 20, torch.Generator().manual_seed(0))
    assert np.array_equal(sample.users, again.users)
