"""The order in which an epoch visits the training ratings."""
from __future__ import annotations

import torch


def epoch_order(users: torch.Tensor, chunk: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of the rows of ``users`` [N] (each row's user index) in which each
    user's rows come in runs of ``chunk`` (a user's last run may be shorter), the runs shuffled.

    ``chunk`` 1 is a uniform shuffle. Longer runs put several ratings of one user in the same
    mini-batch, which a model that runs once per distinct user history (the LSTM) processes
    at the cost of one.
    """
    n = users.shape[0]
    if chunk <= 1 or n == 0:
        return torch.randperm(n, generator=generator)
    within = torch.rand(n, generator=generator, dtype=torch.float64)
    by_user = torch.argsort(users.to(torch.float64) + within)                 # each user's rows, shuffled
    sorted_users = users[by_user]
    starts = torch.ones(n, dtype=torch.bool)
    starts[1:] = sorted_users[1:] != sorted_users[:-1]
    first = torch.nonzero(starts)[:, 0]
    run_of_user = torch.cumsum(starts.to(torch.int64), 0) - 1
    position = torch.arange(n) - first[run_of_user]                          # place within the user's rows
    new_run = starts | (position % chunk == 0)
    run = torch.cumsum(new_run.to(torch.int64), 0) - 1
    priority = torch.rand(int(run[-1]) + 1, generator=generator, dtype=torch.float64)
    return by_user[torch.argsort(priority[run], stable=True)]    # runs stay whole: a stable sort
