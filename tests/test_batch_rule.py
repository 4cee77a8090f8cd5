"""The learning-rate rule that lets the batch size grow: a larger batch with the rule's learning
rate trains MF on MovieLens 100K to the same test RMSE."""
from __future__ import annotations

import numpy as np
import pytest

from contract.paths import DEFAULT_DATA_DIR
from export.config import RunConfig, child_seed
from export.data.fetch import DATASET_DIR
from export.data.loading import DataSource, load_dataset
from export.training.config import TrainingConfig, batch_size_for, learning_rate_for, user_chunk_for
from export.training.trainer import train_model

MOVIELENS = DEFAULT_DATA_DIR / DATASET_DIR


def test_the_rule_scales_the_learning_rate_by_the_square_root_of_the_batch():
    config = TrainingConfig(learning_rate=2e-3)
    assert learning_rate_for(config, 1024) == 2e-3
    assert learning_rate_for(config, 4096) == pytest.approx(4e-3)


def test_the_automatic_batch_keeps_small_sets_at_the_reference_and_grows_with_the_set():
    config = TrainingConfig()
    assert batch_size_for(config, 80_000) == 1024            # MovieLens 100K's training split
    assert batch_size_for(config, 131_072) == 2048            # 64 steps of 2,048
    assert batch_size_for(config, 800_000) == 8192            # MovieLens 1M's
    assert batch_size_for(config, 16_000_000) == 32_768       # the ceiling
    assert batch_size_for(TrainingConfig(batch_size=300), 16_000_000) == 300


def test_runs_of_one_user_s_ratings_grow_with_the_batch_where_asked():
    automatic = TrainingConfig(user_chunk=None)
    assert user_chunk_for(automatic, 1024) == 1               # MovieLens 100K's batch: a uniform shuffle
    assert user_chunk_for(automatic, 300) == 1
    assert user_chunk_for(automatic, 8192) == 8               # the 1M shape's
    assert user_chunk_for(automatic, 32_768) == 32            # 20M's: still 1,024 runs a batch
    assert user_chunk_for(TrainingConfig(user_chunk=None, reference_batch=4096), 32_768) == 8
    assert user_chunk_for(TrainingConfig(), 32_768) == 1      # the default: a uniform shuffle


@pytest.mark.slow
@pytest.mark.skipif(not (MOVIELENS / "u.data").exists(), reason="MovieLens 100K not fetched (make data)")
def test_a_larger_batch_with_the_rule_gives_the_same_movielens_100k_rmse():
    config = RunConfig(models=("mf",))
    dataset, _ = load_dataset(DataSource(data_dir=MOVIELENS), config, np.random.default_rng(child_seed(config.seed, "split")))
    rmse = {}
    for batch in (1024, 2048):
        trained = train_model("mf", dataset, config.replace_training(batch_size=batch), seed=7)
        rmse[batch] = trained.test_metrics["rmse_stars"]
        assert trained.fit.learning_rate == pytest.approx(2e-3 * (batch / 1024) ** 0.5)
    assert rmse[2048] == pytest.approx(rmse[1024], abs=0.003), rmse
