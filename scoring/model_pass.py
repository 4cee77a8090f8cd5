"""One model's pass over a span of users or items: onnxruntime, each table's rows, Parquet parts,
parity.

The local engine runs it once per model and unit over every user and item; each Spark task runs
it over the span it was given. In a users' pass the main thread runs onnxruntime on the next
chunk while a worker thread builds and writes the tables' rows of the chunks before it, handed
over in groups of ``SINK_PAIRS``, so memory is set by the chunk size, not the catalogue. A table
keyed by item (``ITEMS``) writes its span itself (``Table.write_span``).
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from contract.failpoints import failpoint
from contract.pairs import user_ranges
from contract.parity import check_parity
from contract.progress import Progress

from .bundle import Bundle
from .chunks import check_finite
from .results import ModelResult
from .sessions import ModelScorer, Outputs, PairCollector
from .settings import PassSettings
from .tables import USERS, ItemSpan, Table, UserChunk
from .writer import PART_FILE, PartitionWriter, TableWriter, provenance

log = logging.getLogger(__name__)

SINK_PAIRS = 65_536
"""Pairs the table-writer thread takes at a time: consecutive onnxruntime chunks are handed over
together until they reach this many, so top-N selection and Parquet batches run over a few tens
of users per call instead of paying per-call overhead for a few. Memory stays bounded by this
and the chunk size."""

Outlets = Mapping[str, tuple[Table, TableWriter]]
"""The tables a pass writes, by name, each with where its rows go."""


def open_outlets(run_dir: Path, tables: tuple[Table, ...], bundle: Bundle, model: str, run_id: str,
                 part: str = PART_FILE) -> dict[str, tuple[Table, TableWriter]]:
    """A Parquet part file under ``run_dir`` for each of ``tables`` of ``model``, its footer
    carrying the run's provenance."""
    version = bundle.model_version(model)
    return {t.name: (t, PartitionWriter(run_dir, t.name, model, t.schema(bundle), part=part,
                                        metadata=provenance(run_id, bundle.bundle_id, model, version, t.name,
                                                            bundle.feedback)))
            for t in tables}


class ChunkSink:
    """Builds and writes each table's rows of users ``[start, stop)`` (on the table-writer thread)."""

    def __init__(self, bundle: Bundle, scorer: ModelScorer, settings: PassSettings, outlets: Outlets,
                 result: ModelResult) -> None:
        self.bundle, self.scorer, self.settings, self.outlets, self.result = bundle, scorer, settings, outlets, result

    def __call__(self, start: int, stop: int, outputs: Outputs) -> None:
        for table, writer in self.outlets.values():
            # The table's own timings (top-N, pairwise ratings) go to a dict of this thread's: the
            # main thread adds its onnxruntime time to the pass's meanwhile. The rest is writing.
            timed: dict[str, float] = {"top_n": 0.0, "onnxruntime_pairs": 0.0}
            chunk = UserChunk(self.bundle, self.scorer, self.settings, start, stop, outputs, timed)
            t = time.perf_counter()
            writer.write(table.chunk_rows(chunk))
            timed["write"] = time.perf_counter() - t - sum(timed.values())
            for key, value in timed.items():
                self.result.seconds[key] = self.result.seconds.get(key, 0.0) + value


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
    result.parity["max_abs_diff"] = check_parity(scorer.model, ref.unit_ratings[inside],
                                                 parity.values["unit_rating"], *raw, context)
    result.parity["logit_max_abs_diff"] = check_parity(scorer.model, ref.logits[inside], parity.values["logit"],
                                                       *raw, context + ", logit output", logits=True)


def score_users(bundle: Bundle, scorer: ModelScorer, outlets: Outlets, settings: PassSettings,
                pool: ThreadPoolExecutor, users: tuple[int, int] | None = None) -> ModelResult:
    """Score users ``[start, stop)`` (all of them by default) with ``scorer``'s model, hand each
    table's rows to its writer, and check the reference pairs of those users against torch's."""
    start, stop = users if users is not None else (0, bundle.n_users)
    model = scorer.model
    result = ModelResult()
    ref = bundle.references[model]
    inside = (ref.users >= start) & (ref.users < stop)
    parity = PairCollector(ref.users[inside], ref.items[inside])
    one_pass = _Pass(bundle, scorer, ChunkSink(bundle, scorer, settings, outlets, result), pool, result, parity, stop)
    progress = Progress(log, f"{model}: scoring", stop - start, "users")
    try:
        for first, last in user_ranges(stop - start, bundle.n_items, settings.pairs_per_call):
            one_pass.chunk(start + first, start + last)
            progress.update(last)
        one_pass.finish()
    finally:
        one_pass.cancel()
    _check_parity(bundle, scorer, parity, inside, result)
    return result


def score_items(bundle: Bundle, model: str, outlets: Outlets, settings: PassSettings, threads: int,
                device: str = "cpu", items: tuple[int, int] | None = None) -> ModelResult:
    """Each item-keyed table's rows of items ``[start, stop)`` (all by default), its own checks
    against torch included."""
    start, stop = items if items is not None else (0, bundle.n_items)
    result = ModelResult(seconds={})
    for table, writer in outlets.values():
        t = time.perf_counter()
        figures = table.write_span(ItemSpan(bundle, model, settings, start, stop, threads, device), writer)
        result.parity.update({k: v for k, v in figures.items() if k.endswith("max_abs_diff")})
        result.seconds.update({k: v for k, v in figures.items() if not k.endswith("max_abs_diff")})
        result.seconds[f"{table.name}_total"] = time.perf_counter() - t
    return result


def score_span(bundle: Bundle, model: str, unit: str, outlets: Outlets, settings: PassSettings,
               scorer: Callable[[], ModelScorer], pool: ThreadPoolExecutor, threads: int, device: str = "cpu",
               span: tuple[int, int] | None = None) -> ModelResult:
    """One model's tables of one unit over ``span`` (all by default); ``scorer`` opens the model's
    sessions for a users' pass. The writers are closed at the end."""
    if unit == USERS:
        result = score_users(bundle, scorer(), outlets, settings, pool, span)
    else:
        result = score_items(bundle, model, outlets, settings, threads, device, span)
    for _, writer in outlets.values():
        writer.close()
    result.rows = {name: writer.rows for name, (_, writer) in outlets.items()}
    return result
