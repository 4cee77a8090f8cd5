"""The MF bound (``benchmarks.mf_bound``): exact ridge solves, and an optimum that finds the
planted structure where the rank is the planted one."""
from __future__ import annotations

import json

import numpy as np

from benchmarks import mf_bound
from export.config import RunConfig
from export.data.loading import DataSource, load_dataset


def test_each_row_s_solve_is_the_ridge_regression_of_its_own_ratings(monkeypatch):
    monkeypatch.setattr(mf_bound, "OUTER_PRODUCT_VALUES", 16 * 45)   # rows summed over several chunks
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 5, 200)
    rows[:5] = np.arange(5)
    other, target, penalty = rng.normal(size=(200, 3)), rng.normal(size=200), 0.3
    solved = mf_bound.ridge_rows(rows, 6, other, target, penalty, bias_penalty=0.1)
    for row in range(5):
        mine = rows == row
        design = np.concatenate([np.ones((mine.sum(), 1)), other[mine]], axis=1)
        gram = design.T @ design + mine.sum() * np.diag([0.1, penalty, penalty, penalty])
        np.testing.assert_allclose(solved[row], np.linalg.solve(gram, design.T @ target[mine]), rtol=1e-10)
    np.testing.assert_array_equal(solved[5], 0.0)   # a row without ratings


def test_the_optimum_at_the_planted_rank_comes_closer_to_the_floor_than_one_with_room_to_fit_noise(tmp_path):
    dataset, _ = load_dataset(DataSource(synthetic=(400, 300, 40_000)), RunConfig(seed=3), np.random.default_rng(1))
    rows = mf_bound.bound_table(dataset, ranks=[4, 12], penalties=[0.001, 0.004], sweeps=15)
    best = mf_bound.best_by_validation(rows)
    floor = dataset.floor_rmse_stars
    assert best[4]["test_rmse"] < 1.15 * floor
    assert best[4]["test_rmse"] < best[12]["test_rmse"]
    assert all(row["test_rmse"] > 0.97 * floor for row in rows)   # no fit beats the truth but by chance
    # the command writes the same rows
    out = tmp_path / "bound.json"
    assert mf_bound.main(["--synthetic", "400,300,40000", "--seed", "3", "--ranks", "4", "--penalties", "0.004",
                          "--sweeps", "3", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["floor_rmse_stars"] > 0 and [r["rank"] for r in written["rows"]] == [4]
