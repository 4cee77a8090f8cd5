"""``predictions``: the predicted rating of every (user, item) pair."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from contract.errors import VerificationError

from ..bundle import Bundle
from ..chunks import repeated_ids, tiled_ids
from ..settings import PassSettings
from ..writer import arrow_array, table_file
from .base import DriftInputs, Table, TorchOutputs, UserChunk
from .compare import indices, read_rows, sample, stars_tolerance, value_name, widened
from .registry import register

KEYS = ["user_id", "item_id"]


class Predictions(Table):
    name = "predictions"
    columns = pa.schema(
        [pa.field("user_id", pa.int32(), nullable=False),
         pa.field("item_id", pa.int32(), nullable=False),
         pa.field("prediction", pa.float32(), nullable=False)],
        metadata={"description": "Predicted rating on the data's rating scale, clipped to it, for every user-item "
                                 "pair."})
    needs_ratings = True
    value_column = "prediction"
    implicit_description = ("The model's score for every user-item pair (implicit feedback): its estimate, clipped to "
                            "[0, 1], that the user interacts with the item; higher is likelier.")

    def chunk_rows(self, chunk: UserChunk) -> dict[str, pa.Array]:
        """Every item of each user of the chunk."""
        bundle = chunk.bundle
        return {"user_id": repeated_ids(bundle.user_ids, bundle.user_id_array, chunk.start, chunk.stop, bundle.n_items),
                "item_id": tiled_ids(bundle.item_ids, bundle.item_id_array, chunk.stop - chunk.start),
                bundle.value_column: arrow_array(chunk.outputs.rating.reshape(-1))}

    def expected_rows(self, bundle: Bundle, settings: PassSettings) -> int:
        return bundle.n_users * bundle.n_items

    def drift(self, now: ds.Dataset, before: ds.Dataset, inputs: DriftInputs) -> tuple[dict[str, Any], float]:
        """|change| of the predictions of a seeded sample of users, over the pairs both runs hold."""
        value, previous = value_name(now), value_name(before)
        if value != previous:   # a score and a rating are not comparable
            return {"pairs_compared": 0, "pairs_comparable_share": 0.0, "prediction_mean_abs_change": None,
                    "prediction_max_abs_change": None, "why": f"'{previous}' then, '{value}' now"}, 0.0
        users = sample(inputs.user_ids)
        chosen = users if len(users) < len(inputs.user_ids) else None   # None: every user, no filter
        ours = read_rows(now, [*KEYS, value], "user_id", chosen).rename_columns([*KEYS, "value"])
        theirs = read_rows(before, [*KEYS, value], "user_id", chosen).rename_columns([*KEYS, "value"])
        change = _change(ours, theirs)
        share = len(change) / ours.num_rows if ours.num_rows else 0.0
        return {"pairs_compared": int(len(change)), "pairs_comparable_share": share,
                "prediction_mean_abs_change": float(change.mean()) if len(change) else None,
                "prediction_max_abs_change": float(change.max()) if len(change) else None}, share

    def verify(self, run_dir: Path, bundle: Bundle, model: str, torch: TorchOutputs,
               settings: PassSettings) -> dict[str, float]:
        """Every pair once, each within tolerance of torch's clipped rating."""
        path = table_file(run_dir, self.name, model)
        table = pq.read_table(path)
        where = f"{path}: column"
        users = indices(bundle, table.column("user_id").to_numpy(), "user", f"{where} 'user_id'")
        items = indices(bundle, table.column("item_id").to_numpy(), "item", f"{where} 'item_id'")
        matrix = np.full((bundle.n_users, bundle.n_items), np.nan, np.float32)
        matrix[users, items] = table.column(bundle.value_column).to_numpy()
        if table.num_rows != matrix.size or np.isnan(matrix).any():
            raise VerificationError(f"{path}: does not hold exactly one row per (user, item) pair")
        diff = np.abs(matrix - bundle.scale.clipped_rating(torch.unit))
        worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
        if diff[worst] > stars_tolerance(bundle):
            raise VerificationError(f"{path}: {bundle.value_column} for user_id {bundle.user_ids[worst[0]]}, item_id "
                                    f"{bundle.item_ids[worst[1]]} differs from torch by {diff[worst]:.3g} "
                                    f"(tolerance {stars_tolerance(bundle):g})")
        return {"max_abs_diff_rating": float(diff[worst])}


def _change(now: pa.Table, before: pa.Table) -> np.ndarray:
    """|now - before| over the (user, item) pairs both tables hold: row by row when they hold the
    same pairs in the same order (the same bundle, or the same vocabularies), else by an inner join."""
    if now.num_rows == before.num_rows and all(now.column(k).equals(before.column(k)) for k in KEYS):
        ours, theirs = now.column("value"), before.column("value")
    else:
        joined = widened(now, KEYS).join(widened(before, KEYS).rename_columns([*KEYS, "previous"]), KEYS,
                                         join_type="inner")
        ours, theirs = joined.column("value"), joined.column("previous")
    return np.abs(ours.to_numpy().astype(np.float64) - theirs.to_numpy().astype(np.float64))


PREDICTIONS = register(Predictions())
