"""The Spark engine without Spark: how users are split into tasks, how what the tasks returned is
checked, and what the preflight task reports."""
from __future__ import annotations

from types import SimpleNamespace

from scoring.spark_engine import TASK_PAIRS, _tiles, task_spans


def fake_bundle(n_users, n_items, models=("mf", "dense", "lstm")):
    return SimpleNamespace(n_users=n_users, n_items=n_items, models=list(models))


def test_spans_cover_every_user_of_every_model_once_and_give_each_core_work():
    bundle = fake_bundle(943, 1682)
    spans = task_spans(bundle, 16_384, cores=2)
    assert len(spans) >= 4
    for model in bundle.models:
        assert _tiles(sorted((a, b) for m, _, a, b in spans if m == model), 943)


def test_item_spans_cover_every_item_of_every_model_once():
    bundle = fake_bundle(943, 1682)
    spans = task_spans(bundle, 16_384, cores=2, units=("users", "items"))
    for model in bundle.models:
        assert _tiles(sorted((a, b) for m, unit, a, b in spans if (m, unit) == (model, "users")), 943)
        mine = sorted((a, b) for m, unit, a, b in spans if (m, unit) == (model, "items"))
        assert len(mine) >= 2 and _tiles(mine, 1682)


def test_spans_hold_at_most_task_pairs_and_never_less_than_one_call():
    big = fake_bundle(162_541, 59_047)
    assert max((b - a) * big.n_items for _, _, a, b in task_spans(big, 16_384, cores=100)) <= TASK_PAIRS
    tiny = fake_bundle(10, 5, ["mf"])
    assert task_spans(tiny, 16_384, cores=64) == [("mf", "users", 0, 10)]


def test_tiles_rejects_gaps_overlaps_and_duplicates():
    assert _tiles([(0, 5), (5, 9)], 9)
    assert not _tiles([(0, 5), (6, 9)], 9)
    assert not _tiles([(0, 5), (4, 9)], 9)
    assert not _tiles([(0, 5), (0, 5), (5, 9)], 9)
    assert not _tiles([(0, 5)], 9)


def test_preflight_reports_an_executor_that_cannot_open_the_bundle(tmp_path):
    import pyarrow as pa

    from scoring.spark_engine import _preflight_task
    [batch] = list(_preflight_task(iter([pa.record_batch({"task": [0]})]), str(tmp_path / "nowhere")))
    [row] = batch.to_pylist()
    assert row["host"] and "nowhere" in row["problem"]
