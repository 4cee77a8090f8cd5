"""onnxruntime sessions over the all-items graphs: a batch of users in, ``[B, n_items]`` out."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

import numpy as np
import onnxruntime as ort

from .bundle import (ALL_ITEMS_INPUTS, OUTPUTS, PAIRWISE_INPUTS, RANKING_INPUTS, RANKING_OUTPUTS, RATING_OUTPUT,
                     SCORE_OUTPUT, Bundle, pair_windows)
from .errors import BundleError

_EXPECTED_TYPES = {"user": "tensor(int64)", "history_items": "tensor(int64)",
                   "history_ratings": "tensor(float)", "item": "tensor(int64)", "items": "tensor(int64)",
                   "ratings": "tensor(float)"}


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``device`` ('cpu' or 'cuda')."""
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BundleError("--device cuda: onnxruntime has no CUDA provider here "
                              "(install the 'gpu' extra: onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(path: str, threads: int, device: str = "cpu") -> ort.InferenceSession:
    """A session with explicit thread counts: intra-op = ``threads``, one inter-op thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers(device))
    except (RuntimeError, ort.capi.onnxruntime_pybind11_state.Fail,
            ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
            ort.capi.onnxruntime_pybind11_state.InvalidGraph) as exc:
        raise BundleError(f"{path}: onnxruntime cannot load this model ({str(exc).splitlines()[0][:300]})") from exc


def _check_signature(session: ort.InferenceSession, path: object, expected_inputs: tuple[str, ...],
                     expected_outputs: tuple[str, ...]) -> None:
    inputs = {i.name: i.type for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    if tuple(inputs) != expected_inputs or any(inputs[n] != _EXPECTED_TYPES[n] for n in expected_inputs):
        raise BundleError(f"{path}: graph inputs are {inputs}; expected "
                          f"{ {n: _EXPECTED_TYPES[n] for n in expected_inputs} }")
    if sorted(outputs) != sorted(expected_outputs):
        raise BundleError(f"{path}: graph outputs are {outputs}; expected {list(expected_outputs)}")


RATE_BATCH = 4_096
"""Pairs per pairwise-graph call when rating chosen pairs. The LSTM graph's intermediates (each
window's steps) grow onnxruntime's arena by about 30 kB per pair in a call: at the 20M shape
16,384 pairs per call took 0.5 GB more, 4,096 took 0.13 GB, at the same speed."""


@dataclass
class Scores:
    """One batch of users against every item, ``[B, n_items]`` float32 each."""

    rank: np.ndarray
    score: np.ndarray | None = None
    """None when only the ranking graph ran (top-N-only runs)."""
    rating: np.ndarray | None = None

    @classmethod
    def concat(cls, parts: list["Scores"]) -> "Scores":
        """Consecutive batches of users as one (the parts themselves when there is one)."""
        if len(parts) == 1:
            return parts[0]
        return cls(**{f.name: None if getattr(parts[0], f.name) is None
                      else np.concatenate([getattr(part, f.name) for part in parts]) for f in fields(cls)})


@dataclass
class ModelScorer:
    """Scores every item for batches of users with one model's all-items graph, or with its
    ranking graph when only ``rank`` is wanted for every pair; the pairwise graph rates chosen pairs."""

    model: str
    session: ort.InferenceSession
    pairwise: ort.InferenceSession | None
    """Opened for ranking-only scorers, the only ones that rate chosen pairs."""
    bundle: Bundle
    ranking_only: bool

    @classmethod
    def open(cls, bundle: Bundle, model: str, threads: int, device: str = "cpu",
             ranking_only: bool = False) -> "ModelScorer":
        path = bundle.ranking_graph_path(model) if ranking_only else bundle.graph_path(model)
        session = make_session(str(path), threads, device)
        _check_signature(session, path, (RANKING_INPUTS if ranking_only else ALL_ITEMS_INPUTS)[model],
                         RANKING_OUTPUTS if ranking_only else OUTPUTS)
        pairwise = None
        if ranking_only:
            pairwise_path = bundle.pairwise_graph_path(model)
            pairwise = make_session(str(pairwise_path), threads, device)
            _check_signature(pairwise, pairwise_path, PAIRWISE_INPUTS[model], OUTPUTS)
        return cls(model, session, pairwise, bundle, ranking_only)

    def score(self, users: np.ndarray) -> Scores:
        """Every item for user indices ``users``: ``rank`` always, ``score`` and ``rating`` unless
        the scorer is ranking-only."""
        if self.ranking_only:
            (rank,) = self.session.run(list(RANKING_OUTPUTS), {"user": users})
            return Scores(rank)
        feeds = {"user": users}
        if "history_items" in ALL_ITEMS_INPUTS[self.model]:
            feeds |= {"history_items": self.bundle.history_items[users],
                      "history_ratings": self.bundle.history_ratings[users]}
        score, rating, rank = self.session.run(list(OUTPUTS), feeds)
        return Scores(rank, score, rating)

    def rate_pairs(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(score, rating)`` [P] of (user index, item index) pairs, from the pairwise graph
        (ranking-only scorers), ``RATE_BATCH`` pairs per call so memory does not grow with P."""
        score, rating = np.empty(len(users), np.float32), np.empty(len(users), np.float32)
        for start in range(0, len(users), RATE_BATCH):
            u = users[start:start + RATE_BATCH].astype(np.int64)
            i = items[start:start + RATE_BATCH].astype(np.int64)
            if PAIRWISE_INPUTS[self.model] == ("user", "items", "ratings"):  # latest history, then the item
                windows = pair_windows(self.bundle.history_items, self.bundle.history_ratings, u, i)
                feeds = {"user": u, "items": windows[0], "ratings": windows[1]}
            else:
                feeds = {"user": u, "item": i}
            score[start:start + len(u)], rating[start:start + len(u)] = self.pairwise.run(
                [SCORE_OUTPUT, RATING_OUTPUT], feeds)
        return score, rating
