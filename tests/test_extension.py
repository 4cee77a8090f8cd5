"""A fourth model family, defined and registered in tests/ alone, runs through training, export,
parity, scoring (both tables), verification against torch and the report, with no edit to the
project's packages; the scoring job runs it without importing torch or the family's code."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as ds
import pytest

from bias_family import FAMILY
from conftest import run_cli
from contract.bundle_format import PARITY_TOLERANCE
from evaluation.verify import verify_run
from export.config import RunConfig
from export.data.loading import DataSource
from export.fingerprint import code_fingerprint
from export.models import registry
from export.pipeline import train_and_export
from scoring.bundle import load_bundle

pytestmark = pytest.mark.slow


@pytest.fixture
def bias_registered():
    registry.register(FAMILY)
    yield FAMILY
    registry.unregister(FAMILY.name)


def test_a_registered_family_becomes_a_model_name_and_counts_in_the_fingerprint(bias_registered):
    assert registry.names() == ("mf", "dense", "lstm", "item_ae", "bias")
    assert RunConfig().models == ("mf", "dense", "lstm", "item_ae", "bias")
    assert code_fingerprint(models=("mf", "bias")) != code_fingerprint(models=("mf",))


def test_a_fourth_family_runs_through_every_stage(bias_registered, synthetic_dir, tmp_path):
    config = RunConfig(models=("mf", "bias"), seed=3).replace_training(max_epochs=8, batch_size=128)
    # two workers: the family reaches worker processes registered, not only this one
    bundle_path = train_and_export(config, DataSource(data_dir=synthetic_dir), tmp_path / "artifacts", jobs=2)
    bundle = load_bundle(bundle_path)
    assert bundle.models == ["mf", "bias"]
    entry = bundle.manifest["models"]["bias"]
    assert entry["graphs"]["pairwise"]["inputs"] == ["user", "item"]
    assert max(v for k, v in entry["parity"].items() if k.endswith("max_abs_diff") and "logit" not in k) \
        <= PARITY_TOLERANCE
    assert entry["test_metrics"]["rmse_stars"] < bundle.manifest["baseline_global_mean"]["rmse_stars"]
    assert entry["untuned_reference_rmse_unit"] is None

    output = tmp_path / "output"
    result = run_cli("scoring", "--bundle", str(bundle_path), "--output-root", str(output), "--top-n", "5",
                     block_torch=True)
    assert result.returncode == 0, result.stderr
    run = output / "latest"
    predictions = ds.dataset(run / "predictions", partitioning="hive").to_table().to_pandas()
    recommendations = ds.dataset(run / "recommendations", partitioning="hive").to_table().to_pandas()
    bias_predictions = predictions[predictions["model"] == "bias"]
    assert len(bias_predictions) == bundle.n_users * bundle.n_items
    assert bias_predictions["prediction"].between(1, 5).all()
    bias_recs = recommendations[recommendations["model"] == "bias"]
    assert len(bias_recs) > 0 and (bias_recs.groupby("user_id")["rank"].max() <= 5).all()
    seen = {(int(bundle.user_ids[u]), int(bundle.item_ids[i]))
            for u in range(bundle.n_users) for i in bundle.seen_items[bundle.seen_indptr[u]:bundle.seen_indptr[u + 1]]}
    assert not seen & set(zip(bias_recs["user_id"].tolist(), bias_recs["item_id"].tolist()))

    # the family has no item representation: no item_vectors graph, and no similar_items table for it
    assert not bundle.graphs("bias").has("item_vectors") and bundle.graphs("mf").has("item_vectors")
    refused = run_cli("scoring", "--bundle", str(bundle_path), "--output-root", str(tmp_path / "similar"),
                      "--tables", "similar_items", block_torch=True)
    assert refused.returncode == 2
    assert "--tables similar_items: model 'bias' has no item_vectors graph" in refused.stderr

    figures = verify_run(run)
    assert set(figures) == {"mf", "bias"}
    assert figures["bias"]["max_abs_diff_rating"] <= 4 * PARITY_TOLERANCE and figures["bias"]["tie_swaps"] == 0

    report = json.loads((run / "report.json").read_text())
    assert set(report["models"]) == {"mf", "bias"} and set(report["examples"]["recommendations"]) == {"mf", "bias"}
    page = (run / "report.html").read_text()
    assert "Top 5 by bias" in page
    rmse = report["models"]["bias"]["test_metrics"]["rmse_stars"]
    assert f"{rmse:.4f}" in page
    assert np.isfinite(rmse)
