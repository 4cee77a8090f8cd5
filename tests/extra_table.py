"""An output table defined outside the project's packages, for the extension tests: each user's
mean predicted rating over the catalogue. Tests register it (``scoring.tables.register(TABLE)``)
for as long as they need it, or install it as a package's ``recjob.tables`` entry point."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from contract.errors import VerificationError
from scoring.tables import DriftInputs, Table, TorchOutputs, UserChunk
from scoring.writer import arrow_array, table_file


class UserMeans(Table):
    name = "user_means"
    columns = pa.schema([pa.field("user_id", pa.int32(), nullable=False),
                         pa.field("mean_prediction", pa.float32(), nullable=False)],
                        metadata={"description": "Each user's mean predicted rating over the catalogue."})
    id_columns = {"user_id": "user"}
    needs_ratings = True

    def chunk_rows(self, chunk: UserChunk) -> dict[str, pa.Array]:
        bundle = chunk.bundle
        users = bundle.user_ids[chunk.start:chunk.stop]
        column = arrow_array(users) if users.dtype.kind in "iu" else pa.array(users.tolist(), pa.string())
        return {"user_id": column, "mean_prediction": arrow_array(chunk.outputs.rating.mean(axis=1))}

    def expected_rows(self, bundle, settings) -> int:
        return bundle.n_users

    def drift(self, now: ds.Dataset, before: ds.Dataset, inputs: DriftInputs) -> tuple[dict[str, Any], float]:
        ours, theirs = now.to_table().to_pandas(), before.to_table().to_pandas()
        joined = ours.merge(theirs, on="user_id", suffixes=("", "_before"))
        share = len(joined) / len(ours) if len(ours) else 0.0
        change = (joined["mean_prediction"] - joined["mean_prediction_before"]).abs()
        return {"user_means_mean_abs_change": float(change.mean()) if len(change) else None}, share

    def verify(self, run_dir: Path, bundle, model: str, torch: TorchOutputs, settings) -> dict[str, float]:
        table = pq.read_table(table_file(run_dir, self.name, model)).to_pandas().sort_values("user_id")
        expected = bundle.scale.clipped_rating(torch.unit).mean(axis=1)
        diff = float(np.abs(table["mean_prediction"].to_numpy() - expected).max())
        if len(table) != bundle.n_users or diff > 1e-4:
            raise VerificationError(f"{self.name}: {len(table)} rows, largest difference {diff:.3g}")
        return {"user_means_max_abs_diff": diff}


TABLE = UserMeans()
