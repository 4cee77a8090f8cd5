"""The synthetic catalogue's known answer: the planted truth is what a perfect model predicts, and
the bundle records how well it scores on the test ratings (the floor no model can beat)."""
from __future__ import annotations

import json

import numpy as np

from conftest import run_cli
from export.config import RunConfig
from export.data.loading import DataSource, load_dataset
from export.data import synthetic
from export.data.synthetic import NOISE_SD, expected_stars, generate_ratings


def test_the_planted_truth_is_the_mean_of_the_rounded_clipped_noisy_rating():
    rng = np.random.default_rng(0)
    means = np.array([0.2, 1.3, 2.5, 3.49, 4.1, 5.6])
    simulated = np.clip(np.rint(means[:, None] + rng.normal(0, NOISE_SD, (len(means), 200_000))), 1, 5).mean(axis=1)
    assert np.abs(expected_stars(means) - simulated).max() < 0.01


def test_the_floor_is_the_truth_s_rmse_on_the_test_ratings_and_beats_the_global_mean():
    frame = generate_ratings(300, 200, 12_000, seed=4, with_truth=True)
    assert list(generate_ratings(30, 20, 200, seed=4).columns) == ["user_id", "item_id", "rating", "timestamp"]
    dataset, _ = load_dataset(DataSource(synthetic=(300, 200, 12_000)), RunConfig(seed=4), np.random.default_rng(0))
    floor = dataset.floor_rmse_stars
    mean_rmse = float(np.sqrt(np.mean((dataset.test.ratings - dataset.train.ratings.mean()) ** 2)))
    overall = float(np.sqrt(np.mean((frame["expected"] - frame["rating"]) ** 2)))
    assert 0.4 < floor < 0.7 and abs(floor - overall) < 0.05
    assert floor ** 2 < 0.5 * mean_rmse ** 2   # the planted structure explains over half the ratings' variance


def test_a_synthetic_bundle_records_the_floor_and_no_model_beats_it(tmp_path):
    result = run_cli("export", "--synthetic", "400,300,30000", "--artifacts", str(tmp_path), "--models", "mf,dense",
                     "--max-epochs", "8", "--seed", "2")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(((tmp_path / "latest").resolve() / "manifest.json").read_text())
    floor = manifest["floor_rmse_stars"]
    assert 0.4 < floor < 0.7
    for model in ("mf", "dense"):   # beating the floor by more than the test set's sampling noise is impossible
        assert manifest["models"][model]["test_metrics"]["rmse_stars"] > 0.95 * floor


def test_which_pairs_are_rated_follows_the_planted_taste(monkeypatch):
    """Ratings are missing not at random: rated pairs lean towards the user's planted taste, so
    the planted truth's mean over them sits above the centre (biases and drift average out)."""
    leaning = generate_ratings(300, 200, 12_000, seed=4, with_truth=True)["expected"].mean()
    monkeypatch.setattr(synthetic, "SELECTION_SLOPE", 0.0)
    uniform = generate_ratings(300, 200, 12_000, seed=4, with_truth=True)["expected"].mean()
    assert abs(uniform - synthetic.CENTRE) < 0.1 < leaning - synthetic.CENTRE
