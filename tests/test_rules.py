"""Rule files (``--exclude-items``, ``--candidates``): how they are read and what is refused."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contract.errors import DataError
from scoring.rules import ItemRules, load_rules, read_rule

INT_IDS = np.array([3, 5, 8, 13], np.int32)
TEXT_IDS = np.array(["a-1", "b-2", "c-3"])


def test_a_one_column_csv_without_the_item_id_header_is_read(tmp_path):
    path = tmp_path / "only.csv"
    path.write_text("sku\n5\n 8\n5\n99\n")
    mask, record, known = read_rule(path, "exclude_items", INT_IDS)
    assert mask.tolist() == [False, True, True, False] and known.tolist() == [5, 8]
    assert (record["rows"], record["distinct_ids"], record["in_catalogue"], record["not_in_catalogue"]) == (4, 3, 2, 1)


def test_text_ids_from_parquet_and_ids_beyond_int32_are_unknown_not_wrapped(tmp_path):
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"item_id": ["c-3", "z-9"], "note": ["x", "y"]}), path)
    mask, record, _ = read_rule(path, "candidates", TEXT_IDS)
    assert mask.tolist() == [False, False, True] and record["not_in_catalogue"] == 1
    wide = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"item_id": pa.array([5, 2 ** 32 + 5], pa.int64())}), wide)
    mask, record, _ = read_rule(wide, "candidates", INT_IDS)
    assert mask.tolist() == [False, True, False, False] and record["not_in_catalogue"] == 1


@pytest.mark.parametrize("write, message", [
    (lambda p: pq.write_table(pa.table({"item_id": [1.5]}), p), "holds double; expected integer item ids"),
    (lambda p: pq.write_table(pa.table({"item_id": pa.array([1, None], pa.int64())}), p), "row 2 of column"),
    (lambda p: p.write_bytes(b"PAR1 not really"), "not a readable Parquet file"),
])
def test_a_bad_parquet_rule_file_is_refused(tmp_path, write, message):
    path = tmp_path / "rule.parquet"
    write(path)
    with pytest.raises(DataError, match=message):
        read_rule(path, "exclude_items", INT_IDS)


def test_integer_ids_are_refused_for_a_text_catalogue(tmp_path):
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"item_id": [1, 2]}), path)
    with pytest.raises(DataError, match="the data's item ids are text"):
        read_rule(path, "candidates", TEXT_IDS)


def test_a_missing_file_names_its_flag(tmp_path):
    with pytest.raises(DataError, match="--candidates .*: no such file"):
        read_rule(tmp_path / "nowhere.csv", "candidates", INT_IDS)


def test_eligible_items_and_penalty_combine_both_rules(tmp_path):
    (tmp_path / "x.csv").write_text("item_id\n5\n")
    (tmp_path / "c.csv").write_text("item_id\n3\n5\n")
    rules, known = load_rules(tmp_path / "x.csv", tmp_path / "c.csv", INT_IDS)
    assert rules.eligible(4).tolist() == [True, False, False, False]
    assert rules.penalty(4).tolist() == [0.0, -np.inf, -np.inf, -np.inf]
    assert rules.record["eligible_items"] == 1 and known["exclude_items"].tolist() == [5]
    assert ItemRules().penalty(4) is None and ItemRules().eligible(2).all()
