"""A model's top-N quality on the held-out interactions: the test figures of an implicit-feedback
model, which has no ratings to be wrong about."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from ..data.dataset import Interactions
from ..data.sequences import user_context
from ..models.base import Family
from scoring.feeds import build_feeds
from .ranking_metric import RECALL_AT, ranking_figures

TEST_USERS = 5_000
"""Most held-out users the figures are measured over (a seeded sample beyond that)."""
CHUNK = 512
"""Users scored at a time."""


def held_out_ranking(family: Family, module: nn.Module, context_length: int, test: Interactions,
                     trained_on: Interactions, n_users: int, n_items: int, seed: int) -> dict[str, float]:
    """``ndcg_at_10``, ``map_at_10`` and ``recall_at_20`` of the model's ranking head (as its
    ranking graph computes it, fed each user's latest ``trained_on`` interactions) over the users of
    ``test`` (a seeded sample of ``TEST_USERS`` beyond that), every held-out pair relevant and the
    items ``trained_on`` holds for the user left out of the lists; and the ``users`` counted."""
    users = np.unique(test.users)
    if len(users) > TEST_USERS:
        users = np.sort(np.random.default_rng(seed).choice(users, TEST_USERS, replace=False))
    picked = np.isin(test.users, users)
    context = user_context(trained_on, n_users, n_items, context_length)
    core = family.all_items_core(module).eval()

    @torch.no_grad()
    def chunks(chosen: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(chosen), CHUNK):
            chunk = chosen[start:start + CHUNK]
            feeds = build_feeds(family.ranking_inputs, chunk, None, context)
            yield chunk, core.ranking(*(torch.as_tensor(feeds[name]) for name in family.ranking_inputs)).numpy()

    figures = ranking_figures(chunks, (trained_on.users, trained_on.items), (test.users[picked], test.items[picked]),
                              n_items)
    return {"ndcg_at_10": figures["ndcg"], "map_at_10": figures["map"], f"recall_at_{RECALL_AT}": figures["recall"],
            "users": figures["users"]}
