"""ONNX-versus-torch parity at export: the reference pairs and onnxruntime scoring of them."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from scoring.bundle import PAIRWISE_INPUTS, RANK_OUTPUT, SCORE_OUTPUT

from .config import PARITY_FULL_USERS, PARITY_MAX_TEST_PAIRS, PARITY_MAX_USERS, PARITY_SAMPLE_PAIRS
from .families import History

ORT_BATCH = 65_536


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


def session(path: str) -> ort.InferenceSession:
    """A CPU onnxruntime session for parity checks at export time."""
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def pairwise_outputs(sess: ort.InferenceSession, model: str,
                     inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(score, rank)`` of a pairwise graph over encoded pair inputs, in batches."""
    names = PAIRWISE_INPUTS[model]
    n = inputs[0].shape[0]
    parts = [sess.run([SCORE_OUTPUT, RANK_OUTPUT], {k: v[i:i + ORT_BATCH] for k, v in zip(names, inputs)})
             for i in range(0, n, ORT_BATCH)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def all_items_outputs(sess: ort.InferenceSession, users: np.ndarray, items: np.ndarray,
                      history: History, batch_users: int = 128,
                      outputs: tuple[str, ...] = (SCORE_OUTPUT, RANK_OUTPUT)) -> tuple[np.ndarray, ...]:
    """``outputs`` (default ``(score, rank)``) at (users, items) pairs from an all-items or ranking
    graph run on their users (with their histories where the graph takes them).

    Each batch's pairs are gathered as soon as the batch is scored, so memory stays at one
    batch's ``[batch_users, n_items]`` whatever the catalogue size.
    """
    unique, inverse = np.unique(users, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(0, len(unique) + batch_users, batch_users))
    gathered = tuple(np.empty(len(users), np.float32) for _ in outputs)
    takes_history = "history_items" in {i.name for i in sess.get_inputs()}
    for k, start in enumerate(range(0, len(unique), batch_users)):
        chunk = unique[start:start + batch_users]
        feeds = {"user": chunk}
        if takes_history:
            feeds["history_items"] = history.items[chunk]
            feeds["history_ratings"] = history.ratings[chunk]
        picked = order[bounds[k]:bounds[k + 1]]
        rows = inverse[picked] - start
        for out, values in zip(gathered, sess.run(list(outputs), feeds)):
            out[picked] = values[rows, items[picked]]
    return gathered
