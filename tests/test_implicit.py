"""Implicit feedback (clicks, plays, purchases): reading interactions with an optional weight,
training every family on them, the ``score`` column, the gate on NDCG@10 and recall@20, and the
bad-input contract, through the real CLIs where a user would meet them."""
from __future__ import annotations

import json
import logging
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch

from conftest import run_cli
from contract.errors import UsageError
from contract.feedback import IMPLICIT_SCALE, confidence
from evaluation.evaluate import logit_matrix
from export.cli import main as export_main
from export.config import RunConfig
from export.data.columns import ColumnMapping
from export.data.dataset import Interactions, seen_csr
from export.data.loading import DataSource, build_dataset, load_dataset, reading
from export.data.sequences import user_context
from export.data.ratings_file import RatingsOptions, read_ratings
from export.data.synthetic import planted_blocks
from export.gate import _verdict
from export.models import registry
from export.models.base import IMPLICIT_RANKING_FIT
from export.training.negatives import with_negatives
from export.training.ranking_metric import ranking_figures
from export.training.trainer import train_model
from scoring.feeds import build_feeds
from scoring.topn import mask_seen, top_n

N_USERS, N_ITEMS, N_BLOCKS, TOP = 400, 120, 4, 5
MIN_OWN = 0.95
"""Share of all top-N slots that must hold items of the user's own block on the planted implicit
catalogue (measured: 1.0 for every family)."""
MIN_OF_ORACLE = 0.9
"""Share of the block oracle's test NDCG@10 (own-block items first, in random order) each model
must reach (measured: 1.04 for item_ae to 1.09 for MF: the models also learn which own-block
items are played more)."""
MIN_SCORE_AUC = 0.95
"""How often an unseen own-block pair must score above an unseen other-block pair (measured:
0.994 for item_ae, 0.999 and up for the others)."""


def interactions_frame(n_users: int = 60, seed: int = 0) -> pd.DataFrame:
    """Plays of text-id users and items, some pairs repeated, a timestamp, and a rating-like
    column that implicit feedback must not read."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, 3_000)
    items = (users % 3) * 10 + rng.integers(0, 14, len(users))   # three overlapping tastes
    return pd.DataFrame({"user": [f"user-{u}" for u in users], "item": [f"sku-{i}" for i in items],
                         "plays": rng.integers(1, 20, len(users)).astype(np.int64),
                         "rating": rng.integers(1, 6, len(users)), "ts": 1_700_000_000 + np.arange(len(users))})


def test_repeated_interactions_add_up_and_weights_become_log_confidences(tmp_path):
    path = tmp_path / "plays.csv"
    pd.DataFrame({"user": ["a", "a", "a", "b", "b"], "item": ["x", "x", "y", "x", "z"],
                  "plays": [2, 5, 1, 0, 0.5]}).to_csv(path, index=False)
    file = read_ratings(path, RatingsOptions(feedback="implicit",
                                             columns=ColumnMapping.parse("weight=plays", ("weight",))))
    got = {(u, i): r for u, i, r in file.frame[["user_id", "item_id", "rating"]].itertuples(index=False)}
    # a/x played 2 + 5 times; b/x's single row of weight 0 is no interaction
    expected = dict(zip([("a", "x"), ("a", "y"), ("b", "z")], confidence(np.array([7.0, 1.0, 0.5]))))
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(v) for k, v in expected.items())
    assert max(got.values()) == pytest.approx(1.0)


def test_without_a_weight_every_row_is_one_interaction_and_a_rating_column_is_not_read(tmp_path, caplog):
    path = tmp_path / "clicks.parquet"
    interactions_frame().drop(columns="plays").drop_duplicates(["user", "item"]).to_parquet(path)
    with caplog.at_level(logging.WARNING):
        file = read_ratings(path, RatingsOptions(feedback="implicit"))
    assert (file.frame["rating"] == 1.0).all()
    assert file.has_order
    assert any("column 'rating' is not read" in r.message and "--columns weight=rating" in r.message
               for r in caplog.records)


def test_mapping_a_rating_or_a_weight_for_the_other_kind_of_feedback_is_refused():
    with pytest.raises(UsageError, match="--feedback implicit reads no rating.*weight=stars"):
        RatingsOptions(feedback="implicit", columns=ColumnMapping.parse("rating=stars", ("rating",)))
    with pytest.raises(UsageError, match="a weight is read with --feedback implicit"):
        RatingsOptions(columns=ColumnMapping.parse("weight=plays", ("weight",)))
    with pytest.raises(UsageError, match="--duplicates sum"):
        RatingsOptions(duplicates="sum")


@pytest.mark.parametrize("change, expected", [
    (lambda f: f.assign(plays=f["plays"].where(f.index != 7, -3)),
     r"plays\.csv, line 9, column 'plays': expected a weight >= 0 \(a count, a duration, an amount\), got -3"),
    (lambda f: f.drop(columns="item"),
     r"plays\.csv: no item column; columns found: user, plays, rating, ts; expected one named"),
])
def test_bad_interactions_get_one_line_and_exit_1(tmp_path, change, expected):
    path = tmp_path / "plays.csv"
    change(interactions_frame()).to_csv(path, index=False)
    result = run_cli("export", "--feedback", "implicit", "--ratings", str(path), "--columns", "weight=plays",
                     "--artifacts", str(tmp_path / "artifacts"), "--models", "mf")
    assert result.returncode == 1, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert re.search(expected, error), error
    assert not (tmp_path / "artifacts" / "latest").exists()


@pytest.mark.slow
def test_implicit_plays_end_to_end_through_the_clis(tmp_path, monkeypatch, capsys):
    """Train on plays with text ids, score, verify; then a worse bundle is refused by the gate on
    NDCG@10 or recall@20, and the tables keep the run's feedback in the manifest and the report."""
    path = tmp_path / "plays.parquet"
    interactions_frame().to_parquet(path, index=False)
    artifacts, output = tmp_path / "artifacts", tmp_path / "output"
    train = ("export", "--feedback", "implicit", "--ratings", str(path), "--columns", "weight=plays,timestamp=ts",
             "--artifacts", str(artifacts), "--output-root", str(output), "--models", "mf,item_ae", "--seed", "3")
    result = run_cli(*train, "--max-epochs", "20", "--batch-size", "128")
    assert result.returncode == 0, result.stderr
    assert "test NDCG@10" in result.stdout and "implicit feedback" in result.stdout
    bundle = (artifacts / "latest").resolve()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["feedback"] == "implicit" and manifest["rating_scale"] == {"low": 0.0, "high": 1.0}
    for name in ("mf", "item_ae"):
        assert manifest["models"][name]["test_metrics"]["ndcg_at_10"] > 0.1

    scored = run_cli("scoring", "--bundle", str(artifacts / "latest"), "--output-root", str(output), "--top-n", "5",
                     block_torch=True)
    assert scored.returncode == 0, scored.stderr
    run = (output / "latest").resolve()
    predictions = ds.dataset(run / "predictions", partitioning="hive").to_table()
    assert predictions.column_names == ["user_id", "item_id", "score", "model"]
    assert predictions.schema.field("user_id").type == "string"
    scores = predictions.column("score").to_numpy()
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    recommendations = ds.dataset(run / "recommendations", partitioning="hive").to_table()
    assert "score" in recommendations.column_names and "prediction" not in recommendations.column_names
    footer = pq.read_metadata(next((run / "predictions").rglob("*.parquet"))).metadata
    assert footer[b"recjob.feedback"] == b"implicit"
    run_manifest = json.loads((run / "manifest.json").read_text())
    assert run_manifest["feedback"] == "implicit"
    assert "interacts" in run_manifest["table_descriptions"]["predictions"]
    assert "trained on implicit feedback" in (run / "report.html").read_text()
    assert run_cli("evaluation.verify", "--run", str(run)).returncode == 0

    # one epoch of the rating fit and no ranking fit (no option offers that: switched off here,
    # in-process): mf keeps its joint loss's head, which ranks worse than the ranking fit's
    monkeypatch.setitem(IMPLICIT_RANKING_FIT, "rank_fit_patience", 0)
    capsys.readouterr()
    code = export_main([*train[1:], "--force", "--max-epochs", "1", "--batch-size", "4096", "--models", "mf"])
    worse = SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)
    assert worse.returncode == 3, worse.stderr
    (error,) = [line for line in worse.stderr.splitlines() if line.startswith("error:")]
    assert "model gate: model 'mf'" in error and ("NDCG@10" in error or "recall@20" in error), error
    assert (artifacts / "latest").resolve() == bundle
    refused = next(p for p in artifacts.iterdir() if p.is_dir() and p not in (bundle, artifacts / "latest"))
    figures = json.loads((refused / "manifest.json").read_text())["gate"]["models"]["mf"]
    assert "rmse" not in figures and {"ndcg_at_10", "recall_at_20", "previous_recall_at_20"} <= figures.keys()


def test_the_gate_refuses_an_implicit_model_on_recall_at_20_alone():
    figures = {"ndcg_at_10": 0.2, "previous_ndcg_at_10": 0.2, "ndcg_lower_beyond_noise": False,
               "recall_at_20": 0.28, "previous_recall_at_20": 0.3, "recall_lower_beyond_noise": True}
    reason = _verdict("mf", figures, 0.01)
    assert reason is not None and "recall@20 0.2800" in reason
    assert _verdict("mf", {**figures, "recall_lower_beyond_noise": False}, 0.01) is None


@pytest.fixture(scope="module")
def planted():
    """Planted taste blocks read as implicit feedback: a user interacts with 30% of their own
    block's items and 5% of the others', playing their own block's more. 400 users: on fewer, a
    score's first epochs move too little for early stopping to see."""
    frame, truth = planted_blocks(N_USERS, N_ITEMS, N_BLOCKS, seed=11, own_share=0.3, other_share=0.05, noise=0.3)
    plays = np.where(frame["rating"] > 3, 4.0, 1.0)
    frame = frame.assign(rating=confidence(plays))
    # no decay path: the blocks are found without it, and MF's phases would double the test's time
    config = RunConfig(seed=5).replace_training(batch_size=128, max_epochs=30, decay_steps=0)
    dataset = build_dataset([frame], config, np.random.default_rng(0), scale=IMPLICIT_SCALE, feedback="implicit")
    return dataset, truth, config


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.names())
def test_every_model_finds_the_planted_blocks_from_interactions_alone(planted, name):
    dataset, truth, config = planted
    trained = train_model(name, dataset, config, seed=1)
    vocab = dataset.vocab
    # The best any model can do here: rank the user's own block first, in any order.
    same = truth.user_block[vocab.user_ids - 1][:, None] == truth.item_block[vocab.item_ids - 1][None, :]
    oracle = same + np.random.default_rng(0).random(same.shape) * 1e-3
    known = dataset.train.concat(dataset.validation)
    best = ranking_figures(lambda users: [(users, oracle[users])], (known.users, known.items),
                           (dataset.test.users, dataset.test.items), vocab.n_items)["ndcg"]
    assert trained.test_metrics["ndcg_at_10"] >= MIN_OF_ORACLE * best, (trained.test_metrics, best)
    logits = logit_matrix(trained, dataset)
    indptr, seen = seen_csr(dataset.history, vocab.n_users)
    items, valid = top_n(mask_seen(logits, indptr, seen), TOP)
    user_blocks = truth.user_block[vocab.user_ids - 1]
    own = truth.item_block[vocab.item_ids[items] - 1] == user_blocks[:, None]
    assert valid.all() and own.mean() >= MIN_OWN, own.mean()
    # The score (the predictions table's column) ranks an unseen own-block pair above an unseen
    # other-block pair, as the planted taste does.
    family = registry.get(name)
    graph = family.graphs(trained.module, dataset.scale)["all_items"]
    context = user_context(dataset.history, vocab.n_users, vocab.n_items, family.context_length(trained.config))
    feeds = build_feeds(family.all_items_inputs, np.arange(vocab.n_users), None, context)
    with torch.no_grad():
        score = graph(*(torch.as_tensor(feeds[n]) for n in family.all_items_inputs))[1].numpy()
    assert score.min() >= 0.0 and score.max() <= 1.0
    unseen = np.ones(score.shape, bool)
    unseen[np.repeat(np.arange(vocab.n_users), np.diff(indptr)), seen] = False
    same = user_blocks[:, None] == truth.item_block[vocab.item_ids - 1][None, :]
    own_scores, other_scores = score[unseen & same], score[unseen & ~same]
    auc = (own_scores[:, None] > np.random.default_rng(0).choice(other_scores, 500)[None, :]).mean()
    assert auc >= MIN_SCORE_AUC, auc


def test_movielens_shaped_synthetic_interactions_carry_plays_from_the_planted_taste():
    source = DataSource(synthetic=(200, 80, 4_000), options=RatingsOptions(feedback="implicit"))
    dataset, checksums = load_dataset(source, RunConfig(seed=2), np.random.default_rng(0))
    assert dataset.implicit and dataset.scale == IMPLICIT_SCALE
    assert 0.0 < dataset.train.ratings.min() < dataset.train.ratings.max() == pytest.approx(1.0, abs=0.2)
    assert list(checksums.values()) == ["seed=2, implicit"]


def test_sampled_non_interactions_are_items_the_user_never_had():
    rng = np.random.default_rng(0)
    users, items = np.divmod(rng.choice(50 * 40, 600, replace=False), 40)
    everything = Interactions(users, items, np.ones(600, np.float32), np.arange(600))
    known, positives = everything.take(np.arange(500)), everything.take(np.arange(500, 600))
    both = with_negatives(positives, known, 40, np.random.default_rng(1))
    negatives = both.take(np.arange(100, 200))
    assert len(both) == 200 and (negatives.ratings == 0).all() and (negatives.users == positives.users).all()
    had = set(zip(users.tolist(), items.tolist()))
    assert not had & set(zip(negatives.users.tolist(), negatives.items.tolist()))


def test_the_same_file_read_as_interactions_is_other_data_to_the_bundle_fingerprint():
    assert reading(DataSource()) == {}
    implicit = reading(DataSource(options=RatingsOptions(feedback="implicit")))
    assert implicit == {"reading": "feedback=implicit, duplicates=sum"}
    weighted = reading(DataSource(options=RatingsOptions(feedback="implicit",
                                                         columns=ColumnMapping.parse("weight=plays", ("weight",)))))
    assert weighted != implicit
