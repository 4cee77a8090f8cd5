"""The evaluation command on the synthetic data: both protocols, every method, sane metrics."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from evaluation.evaluate import kfold_splits, temporal_split

pytestmark = pytest.mark.slow


def test_kfold_and_temporal_splits_partition_the_ratings():
    frame = pd.DataFrame({"user_id": [1, 1, 1, 1, 1, 2, 2], "item_id": [1, 2, 3, 4, 5, 1, 2],
                          "rating": [5] * 7, "timestamp": [50, 10, 40, 20, 30, 2, 1]})
    folds = kfold_splits(frame, 3, seed=0)
    assert sorted(np.concatenate([test.index for _, _, test in folds]).tolist()) == list(range(7))
    train, test = temporal_split(frame, 0.4)
    assert test.sort_values("timestamp")["item_id"].tolist() == [3, 1]  # user 1's latest two
    assert len(train) + len(test) == 7 and 2 in set(train["user_id"])


def test_evaluate_writes_every_method_for_both_protocols(synthetic_dir, tmp_path):
    out = tmp_path / "evaluation.json"
    result = run_cli("evaluation", "--data-dir", str(synthetic_dir), "--folds", "2", "--models", "mf,dense",
                     "--max-epochs", "3", "--no-surprise", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(report["protocols"]) == {"cross_validation", "temporal"}
    cv = report["protocols"]["cross_validation"]
    assert len(cv["splits"]) == 2
    assert set(cv["mean_rating"]) == {"global_mean", "user_item_bias", "mf", "dense"}
    assert set(cv["mean_ranking"]) == {"most_popular", "random", "mf", "dense", "ease", "implicit_als", "implicit_bpr",
                                       "item_knn"}
    for split in cv["splits"] + report["protocols"]["temporal"]["splits"]:
        assert set(split["peers"]) == {"ease", "implicit_als", "implicit_bpr", "item_knn"}
        assert all(p["setting"] and p["validation_ndcg_at_10"] for p in split["peers"].values())
    for methods in (cv["mean_ranking"], report["protocols"]["temporal"]["mean_ranking"]):
        for metrics in methods.values():
            for kind in ("rated_4_plus", "any_held_out"):
                m = metrics[kind]
                assert 0 <= m["precision"] <= 1 and 0 <= m["ndcg"] <= 1 and 0 <= m["coverage"] <= 1
                assert m["recall"] <= m["recall_at_20"] <= 1
    assert cv["mean_rating"]["user_item_bias"]["rmse_stars"] < cv["mean_rating"]["global_mean"]["rmse_stars"]
    assert "cross_validation: mean over 2 split(s)" in result.stdout


def test_evaluate_on_implicit_feedback_counts_every_held_out_item_and_no_rating_error(synthetic_dir, tmp_path):
    out = tmp_path / "evaluation.json"
    result = run_cli("evaluation", "--feedback", "implicit", "--data-dir", str(synthetic_dir), "--folds", "1",
                     "--models", "mf", "--max-epochs", "3", "--no-surprise", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["feedback"] == "implicit" and set(report["protocols"]) == {"temporal"}
    temporal = report["protocols"]["temporal"]
    assert temporal["mean_rating"] == {}
    assert set(temporal["mean_ranking"]) == {"most_popular", "random", "mf", "ease", "implicit_als", "implicit_bpr",
                                             "item_knn"}
    assert all(set(kinds) == {"any_held_out"} for kinds in temporal["mean_ranking"].values())
    (split,) = temporal["splits"]
    assert 0 < split["ranking_tests"]["mf"]["ndcg_at_10"] <= 1
    assert "top-10 (any_held_out)" in result.stdout
