"""The model bundle's format: file names, schema version, graph outputs and the inputs a graph
may ask for.

A bundle is a folder. Its manifest lists each model's three ONNX graphs with their input names;
every input name is a *feed*, one of ``FEEDS``, which the scoring job knows how to build from a
batch of user indices (and item indices, for pairwise graphs) and the bundle's user context.
So a new model family needs no change on the scoring side as long as its graphs ask for feeds
from this list.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 4
"""Bumped whenever a file's name, layout or meaning changes; the loader rejects other versions."""

MANIFEST = "manifest.json"
USERS = "users.parquet"
ITEMS = "items.parquet"
CONTEXT = "context.npz"
"""Each user's seen items (CSR) and latest rated items, see ``CONTEXT_ARRAYS``."""
REFERENCE = "reference.npz"
HELD_OUT = "heldout.npz"
"""The bundle's held-out (test) pairs, ``users`` and ``items`` indices: the ratings its models never
trained on, so that a later bundle's gate can compare on pairs neither side trained on."""

CONTEXT_ARRAYS = ("seen_indptr", "seen_items", "latest_items", "latest_ratings")
"""Arrays of ``CONTEXT``: the CSR of each user's history (excluded from top-N), and each user's
latest rated items and their ratings on [0, 1], oldest first, left-padded, [n_users, L]."""

UNIT_RATING = "unit_rating"
"""Graph output: the predicted rating on the training scale [0, 1], unclipped; parity uses it."""
RATING = "rating"
"""Graph output: the predicted rating on the data's rating scale, clipped to it; the tables hold it."""
LOGIT = "logit"
"""Graph output: the ranking head's logit that the user picks the item and rates it highly; top-N is ordered by it."""
PAIR_OUTPUTS = (UNIT_RATING, RATING, LOGIT)
"""Outputs of the pairwise and all-items graphs."""
RANKING_OUTPUTS = (LOGIT,)
"""Outputs of the ranking graphs."""
ITEM_VECTOR = "item_vector"
"""Graph output: an item's representation in the model, scaled to unit length, so that the dot
product of two is their cosine similarity (the ``similar_items`` table)."""

GRAPH_KINDS = ("pairwise", "all_items", "ranking")
"""Every model has one graph of each kind: ``pairwise`` rates one (user, item) pair per row, as
the model was trained; ``all_items`` rates and ranks every item for a batch of users,
``[B] -> [B, n_items]``; ``ranking`` is the ``logit`` output of ``all_items`` alone."""

OPTIONAL_GRAPH_KINDS = ("item_vectors",)
"""Graphs a model has where its family defines them: ``item_vectors``, ``[B] item -> [B, D]``
unit-length ``item_vector`` (``Family.item_vectors``)."""

GRAPH_OUTPUTS = {"pairwise": PAIR_OUTPUTS, "all_items": PAIR_OUTPUTS, "ranking": RANKING_OUTPUTS,
                 "item_vectors": (ITEM_VECTOR,)}

FEEDS: dict[str, str] = {
    "user": "tensor(int64)",
    "item": "tensor(int64)",
    "history_items": "tensor(int64)",
    "history_ratings": "tensor(float)",
    "window_items": "tensor(int64)",
    "window_ratings": "tensor(float)",
}
"""Graph input names the scoring job can feed, with their ONNX types. ``user`` [B] and ``item``
[B]: indices. ``history_items`` / ``history_ratings`` [B, L]: each user's latest L rated items
and their ratings on [0, 1] (L is the model's ``context_length``). ``window_items`` /
``window_ratings`` [B, L + 1]: the same followed by the pair's item and a rating slot of 0."""

PAIR_FEEDS = ("item", "window_items", "window_ratings")
"""Feeds that only pairwise graphs may ask for: they need an item per row."""

PARITY_TOLERANCE = 1e-5
"""Largest allowed |onnxruntime - torch| of ``unit_rating``, at export and before every publish;
logits are allowed ``PARITY_TOLERANCE * max(1, |torch logit|)`` (see ``contract.parity``)."""


def graph_file(model: str, kind: str) -> str:
    """File name of one of a model's ONNX graphs."""
    return f"{model}.onnx" if kind == "pairwise" else f"{model}.{kind}.onnx"


def torch_weights_file(model: str) -> str:
    """File name of a model's torch ``state_dict`` (read by verification and the benchmark only)."""
    return f"{model}.pt"


def pair_windows(latest_items: np.ndarray, latest_ratings: np.ndarray, users: np.ndarray,
                 items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``window_items`` and ``window_ratings`` [P, L + 1] of (user, item) index pairs: each
    user's latest L rated items followed by the item, whose own rating slot is 0."""
    return (np.concatenate([latest_items[users], items[:, None]], axis=1),
            np.concatenate([latest_ratings[users], np.zeros((len(users), 1), np.float32)], axis=1))


@dataclass(frozen=True)
class ModelGraphs:
    """One model's graphs: where they are, what each takes, and how much user context."""

    model: str
    paths: dict[str, Path]
    """Graph file by kind: every one of ``GRAPH_KINDS``, and those of ``OPTIONAL_GRAPH_KINDS`` the
    model has."""
    inputs: dict[str, tuple[str, ...]]
    """Input names (feeds) by graph kind."""
    context_length: int
    """Latest rated items per user the history and window feeds carry."""

    @classmethod
    def in_folder(cls, folder: Path, model: str, inputs: dict[str, tuple[str, ...]],
                  context_length: int) -> "ModelGraphs":
        """The graphs of the kinds ``inputs`` names (each of ``GRAPH_KINDS`` and any optional ones)."""
        return cls(model, {kind: folder / graph_file(model, kind) for kind in inputs},
                   {kind: tuple(names) for kind, names in inputs.items()}, int(context_length))

    def has(self, kind: str) -> bool:
        """Whether the model has a graph of this kind."""
        return kind in self.paths

    def manifest_entry(self) -> dict[str, Any]:
        """What the bundle manifest records of the graphs (file names relative to the bundle)."""
        return {"context_length": self.context_length,
                "graphs": {kind: {"file": self.paths[kind].name, "inputs": list(self.inputs[kind]),
                                  "outputs": list(GRAPH_OUTPUTS[kind])} for kind in self.paths}}


def graph_input_problem(kind: str, inputs: list[str]) -> str | None:
    """What is wrong with a graph's recorded input names, or None."""
    unknown = [name for name in inputs if name not in FEEDS]
    if unknown:
        return f"inputs {unknown} are not feeds this code can build ({sorted(FEEDS)})"
    if kind == "item_vectors":
        return None if list(inputs) == ["item"] else "an item_vectors graph takes the one input 'item'"
    if kind != "pairwise" and any(name in PAIR_FEEDS for name in inputs):
        return f"a {kind} graph cannot take the per-pair inputs {list(PAIR_FEEDS)}"
    if not inputs:
        return "a graph takes at least one input (its batch of users)"
    return None
