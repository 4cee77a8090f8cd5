"""ONNX-versus-torch parity at export: the reference pairs, torch's outputs there, and the check of
every graph through the scoring engine's own sessions and batching."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from contract.bundle_format import PARITY_TOLERANCE, ModelGraphs
from contract.machine import available_cpus
from contract.parity import LOGIT_TOLERANCE_RULE, check_parity, check_vector_parity
from scoring.sessions import ModelScorer, PairCollector, item_vectors
from scoring.feeds import UserContext
from scoring.runner import DEFAULT_CHUNK_PAIRS, RANKING_CHUNK_PAIRS

from ..config import PARITY_FULL_USERS, PARITY_MAX_TEST_PAIRS, PARITY_MAX_USERS, PARITY_SAMPLE_PAIRS
from ..models.base import Family, unit_vectors
from ..training.validation import predict_in_batches


def reference_pairs(n_users: int, n_items: int, test_users: np.ndarray, test_items: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Every test pair (of a seeded ``PARITY_MAX_USERS`` users when there are more, and a seeded
    sample of ``PARITY_MAX_TEST_PAIRS`` when there are more pairs), every item for a few seeded
    users, and random pairs up to the sample size, all among the same users."""
    pool = np.arange(n_users) if n_users <= PARITY_MAX_USERS else np.sort(
        rng.choice(n_users, size=PARITY_MAX_USERS, replace=False))
    if len(pool) < n_users:
        kept = np.isin(test_users, pool)
        test_users, test_items = test_users[kept], test_items[kept]
    if len(test_users) > PARITY_MAX_TEST_PAIRS:
        keep = np.sort(rng.choice(len(test_users), size=PARITY_MAX_TEST_PAIRS, replace=False))
        test_users, test_items = test_users[keep], test_items[keep]
    full = np.sort(rng.choice(pool, size=min(PARITY_FULL_USERS, len(pool)), replace=False))
    users = [test_users, np.repeat(full, n_items)]
    items = [test_items, np.tile(np.arange(n_items), len(full))]
    extra = max(0, min(PARITY_SAMPLE_PAIRS, n_users * n_items) - len(full) * n_items)
    users.append(rng.choice(pool, size=extra))
    items.append(rng.integers(0, n_items, extra))
    return np.concatenate(users).astype(np.int64), np.concatenate(items).astype(np.int64)


@dataclass(frozen=True)
class TorchReference:
    """Torch's outputs at the reference pairs: what every graph, and every later scoring run, must match."""

    users: np.ndarray
    items: np.ndarray
    unit_ratings: np.ndarray
    logits: np.ndarray
    vector_items: np.ndarray | None = None
    """Items (indices) whose vectors are kept: the distinct items of the reference pairs, at most
    ``PARITY_VECTOR_ITEMS``; None for a family without ``item_vectors``."""
    item_vectors: np.ndarray | None = None
    """Torch's unit-length vectors of ``vector_items``, float32 [Q, D]."""


PARITY_VECTOR_ITEMS = 2_048
"""Most items whose vectors the bundle keeps for the similar-items parity checks."""


def torch_reference(family: Family, module: torch.nn.Module, context: UserContext, users: np.ndarray,
                    items: np.ndarray, context_length: int) -> TorchReference:
    """``unit_rating`` and ranking-head ``logit`` of the trained module at (user, item) pairs, and
    its unit-length item vectors at some of their items."""
    inputs = family.pair_inputs(users, items, context.last(context_length))
    unit = predict_in_batches(module, family.predict, inputs).numpy().astype(np.float32)
    logits = predict_in_batches(module, family.logits, inputs).numpy().astype(np.float32)
    with torch.no_grad():
        vectors = family.item_vectors(module)
    if vectors is None:
        return TorchReference(users, items, unit, logits)
    distinct = np.unique(items)
    picked = distinct[np.linspace(0, len(distinct) - 1, min(len(distinct), PARITY_VECTOR_ITEMS)).astype(np.int64)]
    with torch.no_grad():
        kept = unit_vectors(vectors[torch.as_tensor(picked)].float()).numpy().astype(np.float32)
    return TorchReference(users, items, unit, logits, picked.astype(np.int64), kept)


def check_graphs(graphs: ModelGraphs, context: UserContext, reference: TorchReference,
                 raw_ids: tuple[np.ndarray, np.ndarray], n_items: int, item_ids: np.ndarray) -> dict[str, Any]:
    """Run each exported graph through the scoring engine at the reference pairs; ParityError at
    the first output beyond tolerance, else the largest differences."""
    model = graphs.model
    threads = available_cpus()
    users, items = reference.users, reference.items
    full = ModelScorer.open(graphs, context, threads)
    ranking = ModelScorer.open(graphs, context, threads, ranking_only=True)
    outputs = {
        "pairwise": vars(full.rate_pairs(users, items)),
        "all_items": PairCollector(users, items).collect(full, max(1, DEFAULT_CHUNK_PAIRS // n_items)),
        "ranking": PairCollector(users, items).collect(ranking, max(1, RANKING_CHUNK_PAIRS // n_items)),
    }
    parity: dict[str, Any] = {"tolerance": PARITY_TOLERANCE, "logit_tolerance": LOGIT_TOLERANCE_RULE,
                              "pairs": int(len(users))}
    for kind, values in outputs.items():
        where = f"export parity, {kind} graph"
        if kind != "ranking":
            parity[f"{kind}_max_abs_diff"] = check_parity(model, reference.unit_ratings, values["unit_rating"],
                                                          *raw_ids, where)
        parity[f"{kind}_logit_max_abs_diff"] = check_parity(model, reference.logits, values["logit"], *raw_ids,
                                                            where + ", logit output", logits=True)
    if reference.vector_items is not None:
        ours = item_vectors(graphs, reference.vector_items, threads)
        parity["item_vectors_max_abs_diff"] = check_vector_parity(
            model, reference.item_vectors, ours, item_ids[reference.vector_items], "export parity, item_vectors graph")
    return parity
