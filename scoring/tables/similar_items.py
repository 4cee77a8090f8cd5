"""``similar_items``: for each item, the K other items most similar to it in the model's own item
representation (cosine of its ``item_vectors`` graph's vectors; which representation each family
uses is in docs/models.md)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from contract.errors import VerificationError
from contract.parity import allowed_difference, check_vector_parity
from contract.progress import Progress

from ..bundle import Bundle
from ..chunks import ids
from ..settings import PassSettings
from ..sessions import item_vectors
from ..similarity import QUERY_ROWS, SimilarItems as Search
from ..topn import top_n
from ..writer import TableWriter, arrow_array, table_file
from .base import ITEMS, DriftInputs, ItemSpan, Table, TorchOutputs
from .compare import indices, list_change, list_examples, read_rows
from .registry import register

log = logging.getLogger(__name__)


class SimilarItemsTable(Table):
    name = "similar_items"
    columns = pa.schema(
        [pa.field("item_id", pa.int32(), nullable=False),
         pa.field("rank", pa.int16(), nullable=False),
         pa.field("similar_item_id", pa.int32(), nullable=False),
         pa.field("similarity", pa.float32(), nullable=False)],
        metadata={"description": "For each item, the K other items most similar to it, rank 1 = most similar: "
                                 "'similarity' is the cosine of the two items' vectors in the model, ties by "
                                 "smaller similar_item_id."})
    id_columns = {"item_id": "item", "similar_item_id": "item"}
    unit = ITEMS
    examples_title = "Most similar items by {model}"

    def unavailable(self, bundle: Bundle, model: str) -> str | None:
        if not bundle.graphs(model).has("item_vectors") or bundle.references[model].item_vectors is None:
            return (f"model '{model}' has no item_vectors graph (its family defines no item representation, or "
                    "the bundle was exported before it had one: re-run `make train`)")
        return None

    def write_span(self, span: ItemSpan, sink: TableWriter) -> dict[str, float]:
        """The lists of items ``[start, stop)``, after checking the item vectors at the bundle's
        reference items against torch's."""
        bundle, model, k = span.bundle, span.model, span.settings.similar_k
        t = time.perf_counter()
        vectors = item_vectors(bundle.graphs(model), np.arange(bundle.n_items), span.threads, span.device)
        ref = bundle.references[model]
        diff = check_vector_parity(model, ref.item_vectors, vectors[ref.vector_items], bundle.item_ids[ref.vector_items],
                                   f"scoring parity against the bundle's torch reference ({bundle.path}), item vectors")
        broken = ~np.isfinite(vectors).all(axis=1)
        if broken.any():
            raise VerificationError(f"model '{model}' produced a non-finite item vector for item_id "
                                    f"{bundle.item_ids[np.flatnonzero(broken)[0]]}")
        search = Search.open(vectors, span.settings.rules.penalty(bundle.n_items), span.threads, span.device)
        seconds = {"item_vectors": time.perf_counter() - t, "similar_top_k": 0.0}
        progress = Progress(log, f"{model}: similar items", span.stop - span.start, "items")
        for start in range(span.start, span.stop, QUERY_ROWS):
            stop = min(start + QUERY_ROWS, span.stop)
            t = time.perf_counter()
            similarity, similar = search.top(np.arange(start, stop), vectors[start:stop], k)
            seconds["similar_top_k"] += time.perf_counter() - t
            rows, ranks = np.nonzero(np.isfinite(similarity))
            sink.write({"item_id": ids(bundle.item_ids, bundle.item_id_array, start + rows),
                        "rank": arrow_array((ranks + 1).astype(np.int16)),
                        "similar_item_id": ids(bundle.item_ids, bundle.item_id_array, similar[rows, ranks]),
                        "similarity": arrow_array(similarity[rows, ranks])})
            progress.update(stop - span.start)
        return {"item_vector_max_abs_diff": diff, **seconds}

    def expected_rows(self, bundle: Bundle, settings: PassSettings) -> int:
        """Per item, ``similar_k`` or as many other eligible items as there are."""
        eligible = settings.rules.eligible(bundle.n_items)
        others = int(eligible.sum()) - eligible.astype(np.int64)
        return int(np.minimum(others, settings.similar_k).sum())

    def drift(self, now: ds.Dataset, before: ds.Dataset, inputs: DriftInputs) -> tuple[dict[str, Any], float]:
        """The share of items whose list changed."""
        columns = ["item_id", "rank", "similar_item_id"]
        compared, share, changed = list_change(read_rows(now, columns), read_rows(before, columns), "item_id",
                                               "similar_item_id")
        return {"items_compared": compared, "items_comparable_share": share, "similar_changed_share": changed}, share

    def verify(self, run_dir: Path, bundle: Bundle, model: str, torch: TorchOutputs,
               settings: PassSettings) -> dict[str, float]:
        """Every list against torch's vectors: the same length, the same items but for swaps
        between near-tied similarities, each similarity within tolerance."""
        path = table_file(run_dir, self.name, model)
        table = pq.read_table(path)
        items = indices(bundle, table.column("item_id").to_numpy(), "item", f"{path}: column 'item_id'")
        similar = indices(bundle, table.column("similar_item_id").to_numpy(), "item",
                          f"{path}: column 'similar_item_id'")
        ranks = table.column("rank").to_numpy().astype(np.int64) - 1
        vectors = torch.item_vectors
        if vectors is None:
            raise VerificationError(f"{path}: model '{model}' has no item vectors in torch to compare with")
        k = min(settings.similar_k, bundle.n_items - 1)
        penalty = settings.rules.penalty(bundle.n_items)
        expected = np.zeros((bundle.n_items, k), np.int64)
        valid = np.zeros((bundle.n_items, k), bool)
        ours = np.zeros(len(items), np.float64)
        theirs = np.zeros(len(items), np.float64)
        order = np.argsort(items, kind="stable")
        bounds = np.searchsorted(items[order], np.arange(0, bundle.n_items + QUERY_ROWS, QUERY_ROWS))
        for block, start in enumerate(range(0, bundle.n_items, QUERY_ROWS)):
            stop = min(start + QUERY_ROWS, bundle.n_items)
            scores = vectors[start:stop] @ vectors.T
            if penalty is not None:
                scores += penalty
            scores[np.arange(stop - start), np.arange(start, stop)] = -np.inf
            expected[start:stop], valid[start:stop] = top_n(scores, k)
            rows = order[bounds[block]:bounds[block + 1]]
            if (ranks[rows] < 0).any() or (ranks[rows] >= k).any():
                raise VerificationError(f"{path}: ranks outside 1..{k}")
            ours[rows] = scores[items[rows] - start, similar[rows]]
            theirs[rows] = scores[items[rows] - start, expected[items[rows], ranks[rows]]]
        if table.num_rows != int(valid.sum()) or not valid[items, ranks].all():
            raise VerificationError(f"{path}: {table.num_rows} rows; torch gives {int(valid.sum())} similar items")
        gap = np.abs(ours - theirs)
        gap[~np.isfinite(ours)] = np.inf
        excess = gap / allowed_difference(theirs, logits=False)
        worst = int(np.argmax(excess)) if len(gap) else 0
        if len(gap) and excess[worst] > 1:
            raise VerificationError(
                f"{path}: item_id {bundle.item_ids[items[worst]]} rank {ranks[worst] + 1} holds item_id "
                f"{bundle.item_ids[similar[worst]]}; torch ranks item_id "
                f"{bundle.item_ids[expected[items[worst], ranks[worst]]]} there (similarity gap {gap[worst]:.3g}, or "
                "the item itself or a ruled-out one)")
        stored = table.column("similarity").to_numpy().astype(np.float64)
        off = np.abs(stored - ours)
        if len(off) and off.max() > allowed_difference(ours, logits=False).max():
            bad = int(np.argmax(off))
            raise VerificationError(f"{path}: item_id {bundle.item_ids[items[bad]]} rank {ranks[bad] + 1}: similarity "
                                    f"{stored[bad]:.6g} differs from torch's {ours[bad]:.6g}")
        return {"similar_tie_swaps": int((expected[items, ranks] != similar).sum()),
                "max_abs_diff_similarity": float(off.max(initial=0.0))}

    def examples(self, run_dir: Path, bundle: Bundle, model: str, keys: list[Any]) -> dict[str, Any]:
        """The lists of the items ``keys``, with titles."""
        return list_examples(ds.dataset(table_file(run_dir, self.name, model).parent, format="parquet"), bundle,
                             "item_id", keys, "similar_item_id", "similarity")


SIMILAR_ITEMS = register(SimilarItemsTable())
