"""How an epoch orders the training ratings: a permutation, in runs of one user's ratings."""
from __future__ import annotations

import torch

from export.training.batches import epoch_order


def _runs(users: torch.Tensor) -> list[tuple[int, int]]:
    """(user, length) of each run of equal values."""
    values, counts = torch.unique_consecutive(users, return_counts=True)
    return list(zip(values.tolist(), counts.tolist()))


def test_chunk_one_is_a_uniform_shuffle():
    users = torch.randint(0, 5, (50,), generator=torch.Generator().manual_seed(0))
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(epoch_order(users, 1, torch.Generator().manual_seed(1)), expected)


def test_runs_hold_one_user_s_ratings_and_every_row_comes_once():
    generator = torch.Generator().manual_seed(2)
    users = torch.arange(50).repeat_interleave(10)[torch.randperm(500, generator=generator)]   # 10 rows each
    order = epoch_order(users, 4, generator)
    assert sorted(order.tolist()) == list(range(500))
    runs = _runs(users[order])
    # Each user's rows come as pieces of 4, 4 and 2; two pieces of one user meet only by chance.
    assert {n for _, n in runs} <= {2, 4, 6, 8, 10}
    assert len(runs) > 120                         # of 150 pieces: shuffled, not one block per user


def test_the_same_seed_gives_the_same_order():
    users = torch.randint(0, 9, (100,), generator=torch.Generator().manual_seed(3))
    first = epoch_order(users, 3, torch.Generator().manual_seed(4))
    assert torch.equal(first, epoch_order(users, 3, torch.Generator().manual_seed(4)))
