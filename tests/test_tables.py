"""Output tables as registered objects: a table defined in tests/ goes through every engine step
with no edit outside tests/; the similar-items table; rules on the lists; bad rule files."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from conftest import SIMILAR_K, SYNTHETIC_SHAPE, run_cli
from contract.errors import VerificationError
from extra_table import TABLE as USER_MEANS
from scoring import tables as registry

pytestmark = pytest.mark.slow

N_USERS, N_ITEMS, _ = SYNTHETIC_SHAPE


def read(run, table):
    frame = ds.dataset(run / table, format="parquet", partitioning="hive").to_table().to_pandas()
    frame["model"] = frame["model"].astype(str)
    return frame


def seen_pairs(synthetic_dir):
    return set(map(tuple, np.loadtxt(synthetic_dir / "u.data", dtype=np.int64)[:, :2].tolist()))


def test_a_table_defined_in_tests_goes_through_every_step(trained, tmp_path):
    from evaluation.verify import verify_run
    from scoring.runner import ScoringOptions, run_scoring
    registry.register(USER_MEANS)
    try:
        options = ScoringOptions(bundle=trained / "latest", output_root=tmp_path, tables=("recommendations", "user_means"),
                                 report=False)
        run = run_scoring(options)
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["tables"] == ["recommendations", "user_means"]
        assert set(manifest["row_counts"]["user_means"].values()) == {N_USERS}
        assert "Each user's mean predicted rating" in manifest["table_descriptions"]["user_means"]
        means = read(run, "user_means")
        assert means["mean_prediction"].between(1, 5).all()
        figures = verify_run(run)
        assert all(f["user_means_max_abs_diff"] <= 1e-4 for f in figures.values())
        again = json.loads((run_scoring(options) / "manifest.json").read_text())
        assert all(f["user_means_mean_abs_change"] == 0 and f["comparable"] for f in again["drift"]["models"].values())
    finally:
        registry.unregister(USER_MEANS.name)


def test_similar_items_lists_each_item_s_nearest_others(scored):
    run = scored / "latest"
    similar = read(run, "similar_items")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["similar_k"] == SIMILAR_K
    for model, frame in similar.groupby("model"):
        assert manifest["row_counts"]["similar_items"][model] == N_ITEMS * SIMILAR_K == len(frame)
        assert (frame["item_id"] != frame["similar_item_id"]).all()
        assert not frame.duplicated(["item_id", "similar_item_id"]).any()
        assert frame["similarity"].between(-1.0001, 1.0001).all()
        for _, one in frame.groupby("item_id"):
            assert one["rank"].tolist() == list(range(1, SIMILAR_K + 1))
            assert (np.diff(one["similarity"].to_numpy()) <= 0).all()
        assert manifest["parity"][model]["item_vector_max_abs_diff"] <= 1e-5
    assert {"similar_items_total", "similar_top_k"} <= set(manifest["seconds"]["mf"])


def write_rules(folder):
    exclude, candidates = folder / "exclude.csv", folder / "candidates.parquet"
    exclude.write_text("item_id,reason\n1,withdrawn\n2,out of stock\n 3 ,withdrawn\n999999,gone\n")
    pq.write_table(pa.table({"sku": pa.array(list(range(1, 40)) + [12345], pa.int64())}), candidates)
    return exclude, candidates


def test_rules_keep_lists_full_of_eligible_items_only(trained, synthetic_dir, tmp_path):
    exclude, candidates = write_rules(tmp_path)
    out = tmp_path / "out"
    result = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", str(out), "--top-n", "5",
                     "--tables", "recommendations,similar_items", "--similar-k", "6", "--no-report",
                     "--exclude-items", str(exclude), "--candidates", str(candidates))
    assert result.returncode == 0, result.stderr
    assert "--exclude-items" in result.stderr and "1 of its 4 ids are not in the catalogue" in result.stderr
    run = (out / "latest").resolve()
    eligible = set(range(4, 40))
    recs, similar = read(run, "recommendations"), read(run, "similar_items")
    assert set(recs["item_id"]) <= eligible and set(similar["similar_item_id"]) <= eligible
    assert set(similar["item_id"]) == set(range(1, N_ITEMS + 1))   # every item still has its list
    seen = seen_pairs(synthetic_dir)
    for (_, user), group in recs.groupby(["model", "user_id"]):
        assert len(group) == min(5, sum((user, i) not in seen for i in eligible))
    for (_, item), group in similar.groupby(["model", "item_id"]):
        assert len(group) == 6
    manifest = json.loads((run / "manifest.json").read_text())
    record = manifest["rules"]
    assert record["exclude_items"]["rows"] == 4 and record["exclude_items"]["not_in_catalogue"] == 1
    assert record["candidates"]["in_catalogue"] == 39 and record["candidates"]["not_in_catalogue"] == 1
    assert record["eligible_items"] == len(eligible)
    assert len(record["candidates"]["sha256"]) == 64
    assert pq.read_table(run / "rules" / "exclude_items.parquet").column("item_id").to_pylist() == [1, 2, 3]
    verified = run_cli("evaluation.verify", "--run", str(run))
    assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize("content, expected", [
    ("a,b\n1,2\n", "expected a column 'item_id' (or a single column)"),
    ("item_id\n", "holds no item ids"),
    ("item_id\n4\nnot-an-id\n", "row 2 of column 'item_id' is 'not-an-id'; expected an integer item id"),
])
def test_a_bad_rule_file_is_one_line_and_publishes_nothing(trained, tmp_path, content, expected):
    path = tmp_path / "rules.csv"
    path.write_text(content)
    result = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", str(tmp_path / "out"),
                     "--no-report", "--exclude-items", str(path))
    assert result.returncode == 1
    assert expected in result.stderr and str(path) in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "latest").exists()


def test_verify_catches_a_tampered_similar_items_row(scored, tmp_path):
    from evaluation.verify import verify_run
    run = tmp_path / "run"
    shutil.copytree((scored / "latest").resolve(), run)
    path = run / "similar_items" / "model=mf" / "part-00000.parquet"
    table = pq.read_table(path)
    frame = table.to_pandas()
    first = frame.index[(frame["rank"] == 1)][0]
    last = frame.index[(frame["item_id"] == frame.loc[first, "item_id"]) & (frame["rank"] == SIMILAR_K)][0]
    frame.loc[[first, last], "similar_item_id"] = frame.loc[[last, first], "similar_item_id"].to_numpy()
    pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), path)
    with pytest.raises(VerificationError, match="similar_items"):
        verify_run(run)
    frame = table.to_pandas()
    frame.loc[first, "similarity"] += 0.01
    pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), path)
    with pytest.raises(VerificationError, match="similarity"):
        verify_run(run)
