"""The order in which an epoch visits the training ratings."""
from __future__ import annotations

import torch


def epoch_order(users: torch.Tensor, chunk: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of the rows of ``users`` [N] (each row's user index) in which each
    user's rows come in runs of ``chunk`` (a user's last run may be shorter), the runs shuffled.

    ``chunk`` 1 is a uniform shuffle. Longer runs put several ratings of one user in the same
    mini-batch, which a model that runs once per distinct user history (the LSTM) processes
    at the cost of one. Temporaries are freed as soon as they are used: at 16M ratings each is
    64-128 MB.
    """
    n = users.shape[0]
    if chunk <= 1 or n == 0:
        return torch.randperm(n, generator=generator)
    key = users.to(torch.float64)
    key += torch.rand(n, generator=generator, dtype=torch.float64)             # each user's rows, shuffled
    by_user = torch.argsort(key)
    del key
    sorted_users = users[by_user]
    starts = torch.ones(n, dtype=torch.bool)
    starts[1:] = sorted_users[1:] != sorted_users[:-1]
    del sorted_users
    first = torch.nonzero(starts)[:, 0]
    position = torch.arange(n) - first[torch.cumsum(starts, 0, dtype=torch.int64) - 1]   # place within the user
    del first
    run = torch.cumsum(starts | (position % chunk == 0), 0, dtype=torch.int64) - 1
    del position, starts
    priority = torch.rand(int(run[-1]) + 1, generator=generator, dtype=torch.float64)
    return by_user[torch.argsort(priority[run], stable=True)]    # runs stay whole: a stable sort
