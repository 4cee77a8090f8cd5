"""onnxruntime sessions over one model's graphs: every item for a batch of users, chosen pairs, or
item vectors.

The scoring job and export's parity checks both run this code, so what export checks is what
will serve the bundle.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.bundle_format import (FEEDS, GRAPH_OUTPUTS, ITEM_VECTOR, LOGIT, PAIR_OUTPUTS, RATING, UNIT_RATING,
                                    ModelGraphs)
from contract.errors import BundleError

from .feeds import UserContext, build_feeds


def providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``device`` ('cpu' or 'cuda')."""
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BundleError("--device cuda: onnxruntime has no CUDA provider here "
                              "(install the 'gpu' extra: onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(threads: int) -> ort.SessionOptions:
    """Explicit thread counts (intra-op = ``threads``, one inter-op thread), and denormal floats
    flushed to zero: a trained model's near-zero weights would otherwise make some passes many
    times slower."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def make_session_from_bytes(model: bytes, threads: int, device: str = "cpu") -> ort.InferenceSession:
    """A session (``session_options``) of a graph this code built itself."""
    return ort.InferenceSession(model, sess_options=session_options(threads), providers=providers(device))


def make_session(path: Path, threads: int, device: str = "cpu") -> ort.InferenceSession:
    """A session (``session_options``) of one of a bundle's graphs; BundleError if onnxruntime
    cannot load it."""
    options = session_options(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers(device))
    except (RuntimeError, ort.capi.onnxruntime_pybind11_state.Fail,
            ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
            ort.capi.onnxruntime_pybind11_state.InvalidGraph) as exc:
        raise BundleError(f"{path}: onnxruntime cannot load this model ({str(exc).splitlines()[0][:300]})") from exc


def check_signature(session: ort.InferenceSession, path: Path, inputs: tuple[str, ...],
                    outputs: tuple[str, ...]) -> None:
    """BundleError unless the graph takes exactly ``inputs`` (with their feed types) and gives ``outputs``."""
    actual = {i.name: i.type for i in session.get_inputs()}
    if tuple(actual) != inputs or any(actual[n] != FEEDS[n] for n in inputs):
        raise BundleError(f"{path}: graph inputs are {actual}; expected { {n: FEEDS[n] for n in inputs} }")
    names = [o.name for o in session.get_outputs()]
    if sorted(names) != sorted(outputs):
        raise BundleError(f"{path}: graph outputs are {names}; expected {list(outputs)}")


RATE_BATCH = 4_096
"""Pairs per pairwise-graph call when rating chosen pairs: a sequence model's per-window
intermediates grow onnxruntime's memory arena with the pairs in a call."""


@dataclass
class Outputs:
    """One batch of users against every item, ``[B, n_items]`` float32 each."""

    logit: np.ndarray
    unit_rating: np.ndarray | None = None
    """None when only the ranking graph ran (top-N-only runs)."""
    rating: np.ndarray | None = None

    @classmethod
    def concat(cls, parts: list["Outputs"]) -> "Outputs":
        """Consecutive batches of users as one (the part itself when there is one)."""
        if len(parts) == 1:
            return parts[0]
        return cls(**{f.name: None if getattr(parts[0], f.name) is None
                      else np.concatenate([getattr(part, f.name) for part in parts]) for f in fields(cls)})


@dataclass
class ModelScorer:
    """Runs one model's graphs: the all-items graph (or, when only ``logit`` is wanted for every
    pair, the ranking graph) for batches of users, and the pairwise graph for chosen pairs."""

    graphs: ModelGraphs
    session: ort.InferenceSession
    context: UserContext
    """The users' context cut to the model's ``context_length``."""
    ranking_only: bool
    threads: int
    device: str
    pairwise: ort.InferenceSession | None = None
    """Opened with the scorer when it is ranking-only (every chunk rates its chosen pairs), else on
    the first ``rate_pairs``: a full run takes its ratings from the all-items graph."""

    @classmethod
    def open(cls, graphs: ModelGraphs, context: UserContext, threads: int, device: str = "cpu",
             ranking_only: bool = False) -> "ModelScorer":
        kind = "ranking" if ranking_only else "all_items"
        session = make_session(graphs.paths[kind], threads, device)
        check_signature(session, graphs.paths[kind], graphs.inputs[kind], GRAPH_OUTPUTS[kind])
        scorer = cls(graphs, session, context.last(graphs.context_length), ranking_only, threads, device)
        if ranking_only:
            scorer.pairwise_session()
        return scorer

    def pairwise_session(self) -> ort.InferenceSession:
        """The pairwise graph's session, opened and checked on first use."""
        if self.pairwise is None:
            path = self.graphs.paths["pairwise"]
            self.pairwise = make_session(path, self.threads, self.device)
            check_signature(self.pairwise, path, self.graphs.inputs["pairwise"], PAIR_OUTPUTS)
        return self.pairwise

    @property
    def model(self) -> str:
        return self.graphs.model

    def score_users(self, users: np.ndarray) -> Outputs:
        """Every item for user indices ``users``: ``logit`` always, ``unit_rating`` and ``rating``
        unless the scorer is ranking-only."""
        if self.ranking_only:
            (logit,) = self.session.run([LOGIT], build_feeds(self.graphs.inputs["ranking"], users, None, self.context))
            return Outputs(logit)
        feeds = build_feeds(self.graphs.inputs["all_items"], users, None, self.context)
        unit, rating, logit = self.session.run(list(PAIR_OUTPUTS), feeds)
        return Outputs(logit, unit, rating)

    def rate_pairs(self, users: np.ndarray, items: np.ndarray) -> Outputs:
        """``unit_rating``, ``rating`` and ``logit`` [P] of (user index, item index) pairs from the
        pairwise graph, ``RATE_BATCH`` pairs per call so memory does not grow with P."""
        session = self.pairwise_session()
        out = {name: np.empty(len(users), np.float32) for name in PAIR_OUTPUTS}
        for start in range(0, len(users), RATE_BATCH):
            stop = start + RATE_BATCH
            feeds = build_feeds(self.graphs.inputs["pairwise"], users[start:stop], items[start:stop], self.context)
            for name, values in zip(PAIR_OUTPUTS, session.run(list(PAIR_OUTPUTS), feeds)):
                out[name][start:start + len(values)] = values
        return Outputs(out[LOGIT], out[UNIT_RATING], out[RATING])


ITEM_BATCH = 65_536
"""Items per call of an ``item_vectors`` graph."""


def item_vectors(graphs: ModelGraphs, items: np.ndarray, threads: int, device: str = "cpu") -> np.ndarray:
    """The model's unit-length vectors [len(items), D] of item indices ``items``, from its
    ``item_vectors`` graph; BundleError if it has none."""
    if not graphs.has("item_vectors"):
        raise BundleError(f"model '{graphs.model}' has no item_vectors graph: its family defines no item "
                          "representation, or the bundle was exported before it had one (re-run `make train`)")
    path = graphs.paths["item_vectors"]
    session = make_session(path, threads, device)
    check_signature(session, path, graphs.inputs["item_vectors"], GRAPH_OUTPUTS["item_vectors"])
    items = np.asarray(items, dtype=np.int64)
    parts = [session.run([ITEM_VECTOR], {"item": items[start:start + ITEM_BATCH]})[0]
             for start in range(0, len(items), ITEM_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


class PairCollector:
    """Gathers the outputs at fixed (user, item) pairs from batches of users scored against
    every item, for parity checks: the scoring run fills it during its pass over all users,
    export's check from the users of the pairs alone."""

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        self.users, self.items = users, items
        self.order = np.argsort(users, kind="stable")
        self.sorted_users = users[self.order]
        self.values = {name: np.full(len(users), np.nan, np.float32) for name in PAIR_OUTPUTS}

    def take(self, batch_users: np.ndarray, outputs: Outputs) -> None:
        """Record the pairs whose user is in ``batch_users`` (ascending, consecutive rows of ``outputs``)."""
        lo, hi = np.searchsorted(self.sorted_users, [batch_users[0], batch_users[-1] + 1])
        picked = self.order[lo:hi]
        rows = np.searchsorted(batch_users, self.users[picked])
        for name in PAIR_OUTPUTS:
            values = getattr(outputs, name)
            if values is not None:
                self.values[name][picked] = values[rows, self.items[picked]]

    def collect(self, scorer: ModelScorer, chunk_users: int) -> dict[str, np.ndarray]:
        """Score the pairs' users in chunks and gather every output at the pairs."""
        distinct = np.unique(self.users)
        for start in range(0, len(distinct), chunk_users):
            batch = distinct[start:start + chunk_users]
            self.take(batch, scorer.score_users(batch))
        return self.values
