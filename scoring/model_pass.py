"""One model's pass over a span of users: onnxruntime chunks, top-N, Parquet parts, parity.

The local engine runs it once per model over every user; each Spark task runs it over the span
of users it was given. The main thread runs onnxruntime on the next chunk while a worker thread
selects top-N and writes the chunks before it, handed over in groups of ``SINK_PAIRS``, so
memory is set by the chunk size, not the catalogue.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from contract.failpoints import failpoint
from contract.pairs import user_ranges
from contract.parity import check_parity
from contract.progress import Progress

from .bundle import Bundle
from .chunks import ChunkSink, check_finite
from .engine import ModelScorer, Outputs, PairCollector
from .run_manifest import ModelResult
from .writer import TableWriter

log = logging.getLogger(__name__)

SINK_PAIRS = 65_536
"""Pairs the table-writer thread takes at a time: consecutive onnxruntime chunks are handed over
together until they reach this many, so top-N selection and Parquet batches run over a few tens
of users per call instead of paying per-call overhead for a few. Memory stays bounded by this
and the chunk size."""


@dataclass(frozen=True)
class PassSettings:
    """How a pass walks its users and what its recommendations hold."""

    top_n: int
    pairs_per_call: int


class _Pass:
    """Chunks through onnxruntime on this thread, groups of them to the writer thread."""

    def __init__(self, bundle: Bundle, scorer: ModelScorer, sink: ChunkSink, pool: ThreadPoolExecutor,
                 result: ModelResult, parity: PairCollector, stop: int) -> None:
        self.bundle, self.scorer, self.sink, self.pool, self.result, self.parity = \
            bundle, scorer, sink, pool, result, parity
        self.stop = stop
        self.pending: deque[Future] = deque()
        self.held: list[Outputs] = []   # consecutive chunks not yet handed to the writer thread
        self.held_from = 0

    def chunk(self, start: int, stop: int) -> None:
        if not self.held:
            self.held_from = start
        t = time.perf_counter()
        users = np.arange(start, stop, dtype=np.int64)
        outputs = self.scorer.score_users(users)
        self.result.seconds["onnxruntime"] += time.perf_counter() - t
        for name in ("unit_rating", "logit"):
            values = getattr(outputs, name)
            if values is not None:
                check_finite(self.scorer.model, self.bundle, name, values, users[:, None],
                             np.arange(self.bundle.n_items)[None, :])
        self.parity.take(users, outputs)
        self.held.append(outputs)
        if stop == self.stop or (stop - self.held_from) * self.bundle.n_items >= SINK_PAIRS:
            self.pending.append(self.pool.submit(self.sink, self.held_from, stop, Outputs.concat(self.held)))
            self.held = []
        failpoint("mid_model_first_chunk")
        while len(self.pending) > 1:
            self.pending.popleft().result()

    def finish(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def cancel(self) -> None:
        for future in self.pending:
            future.cancel()


def _check_parity(bundle: Bundle, scorer: ModelScorer, parity: PairCollector, inside: np.ndarray,
                  result: ModelResult) -> None:
    """The pass's outputs at the reference pairs ``inside`` (a mask) against torch's: ParityError
    beyond tolerance."""
    result.parity_pairs = int(inside.sum())
    if not result.parity_pairs:
        return
    if scorer.ranking_only:  # the reference pairs' ratings come from the pairwise graph, as the table's do
        parity.values["unit_rating"] = scorer.rate_pairs(parity.users, parity.items).unit_rating
    ref = bundle.references[scorer.model]
    raw = (bundle.user_ids[parity.users], bundle.item_ids[parity.items])
    context = f"scoring parity against the bundle's torch reference ({bundle.path})"
    result.parity_max_abs_diff = check_parity(scorer.model, ref.unit_ratings[inside], parity.values["unit_rating"],
                                              *raw, context)
    result.parity_logit_max_abs_diff = check_parity(scorer.model, ref.logits[inside], parity.values["logit"], *raw,
                                                    context + ", logit output", logits=True)


def score_span(bundle: Bundle, scorer: ModelScorer, writers: Mapping[str, TableWriter], settings: PassSettings,
               pool: ThreadPoolExecutor, users: tuple[int, int] | None = None) -> ModelResult:
    """Score users ``[start, stop)`` (all of them by default) with ``scorer``'s model, hand each
    table's rows to its writer (closed at the end), and check the reference pairs of those users
    against torch's outputs."""
    start, stop = users if users is not None else (0, bundle.n_users)
    model = scorer.model
    result = ModelResult()
    ref = bundle.references[model]
    inside = (ref.users >= start) & (ref.users < stop)
    parity = PairCollector(ref.users[inside], ref.items[inside])
    one_pass = _Pass(bundle, scorer, ChunkSink(bundle, settings.top_n, writers, result, scorer), pool, result,
                     parity, stop)
    progress = Progress(log, f"{model}: scoring", stop - start, "users")
    try:
        for first, last in user_ranges(stop - start, bundle.n_items, settings.pairs_per_call):
            one_pass.chunk(start + first, start + last)
            progress.update(last)
        one_pass.finish()
        for writer in writers.values():
            writer.close()
    finally:
        one_pass.cancel()
    result.rows = {t: w.rows for t, w in writers.items()}
    _check_parity(bundle, scorer, parity, inside, result)
    return result
