"""Both CLIs on the synthetic data set: bundle, tables, schemas, parity, verify, determinism."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from conftest import QUICK_ARGS, SIMILAR_K, SYNTHETIC_SHAPE, TABLES, run_cli, table_contents
from scoring.bundle import load_bundle
from scoring import tables as table_registry
from export.models import registry

MODEL_NAMES = registry.names()   # the built-in families, which make score trains

N_USERS, N_ITEMS, _ = SYNTHETIC_SHAPE
TOP_N = 5


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


def read(run, table):
    return ds.dataset(run / table, format="parquet", partitioning="hive").to_table().to_pandas()


def test_bundle_is_complete_and_every_model_beats_the_global_mean(trained):
    bundle = manifest(trained / "latest")
    assert (trained / "latest" / "_SUCCESS").exists()
    assert bundle["n_users"] == N_USERS and bundle["n_items"] == N_ITEMS
    baseline = bundle["baseline_global_mean"]["rmse_stars"]
    for name in MODEL_NAMES:
        model = bundle["models"][name]
        assert model["test_metrics"]["rmse_stars"] < baseline, (name, model["test_metrics"], baseline)
        assert model["parity"]["pairwise_max_abs_diff"] <= 1e-5
        assert model["parity"]["all_items_max_abs_diff"] <= 1e-5
        assert model["parity"]["pairs"] >= min(10_000, N_USERS * N_ITEMS)
        if registry.get(name).closed_form:   # solved, with the penalties it chose recorded
            assert bundle["config"]["model_configs"][name]["choices"]["rank_l2"] > 0
        else:
            assert model["learning_curve"][0]["epoch"] == 1
    assert set(bundle["files"]) >= {"mf.onnx", "dense.onnx", "lstm.onnx", "mf.all_items.onnx", "context.npz"}
    assert bundle["exporter"]["external_data"] is False
    load_bundle(trained / "latest")  # every checksum holds


def test_tables_have_the_schema_counts_and_raw_ids(scored, trained):
    run = scored / "latest"
    assert (run / "_SUCCESS").exists()
    for table in TABLES:
        schema = table_registry.get(table).columns
        for model in MODEL_NAMES:
            file_schema = pq.read_schema(run / table / f"model={model}" / "part-00000.parquet")
            assert file_schema.remove_metadata().equals(schema.remove_metadata())
    predictions = read(run, "predictions")
    assert len(predictions) == len(MODEL_NAMES) * N_USERS * N_ITEMS
    for model, group in predictions.groupby("model", observed=True):
        assert len(group) == N_USERS * N_ITEMS
        assert not group.duplicated(["user_id", "item_id"]).any()
        assert group["prediction"].between(1, 5).all()
    bundle = load_bundle(trained / "latest")
    assert sorted(predictions["user_id"].unique()) == sorted(bundle.user_ids.tolist())
    assert sorted(predictions["item_id"].unique()) == bundle.item_ids.tolist()
    run_manifest = manifest(run)
    assert run_manifest["row_counts"]["predictions"] == {m: N_USERS * N_ITEMS for m in MODEL_NAMES}
    assert all(p["max_abs_diff"] <= 1e-5 for p in run_manifest["parity"].values())
    assert all(0 <= p["logit_max_abs_diff"] < 1e-3 and p["logit_tolerance"] for p in run_manifest["parity"].values())


def test_top_n_excludes_history_and_is_ranked(scored, trained, synthetic_dir):
    recs = read(scored / "latest", "recommendations")
    rated = set(map(tuple, np.loadtxt(synthetic_dir / "u.data", dtype=np.int64)[:, :2].tolist()))
    assert not any((u, i) in rated for u, i in zip(recs["user_id"], recs["item_id"]))
    predictions = read(scored / "latest", "predictions").set_index(["model", "user_id", "item_id"])
    for (model, user), group in recs.groupby(["model", "user_id"], observed=True):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        unseen = N_ITEMS - sum(1 for u, _ in rated if u == user)
        assert len(group) == min(TOP_N, unseen)
        # The coherence rule: items predicted at or above the midpoint (3) first, each part by logit.
        liked = group["prediction"].to_numpy() >= 3.0
        assert (np.diff(liked.astype(int)) <= 0).all()
        for part in (liked, ~liked):
            assert (np.diff(group["logit"].to_numpy()[part]) <= 0).all()
        stored = predictions.loc[[(model, user, i) for i in group["item_id"]], "prediction"].to_numpy()
        np.testing.assert_allclose(group["prediction"].to_numpy(), stored)


def test_the_manifest_gives_each_model_s_share_of_recommendations_predicted_below_the_midpoint(scored):
    recs = read(scored / "latest", "recommendations")
    figures = manifest((scored / "latest").resolve())["table_figures"]["recommendations"]
    assert set(figures) == set(MODEL_NAMES)
    for model, share in ((m, f["below_midpoint"]) for m, f in figures.items()):
        mine = recs[recs["model"] == model]
        assert share == pytest.approx(float((mine["prediction"] < 3.0).mean()))


def test_a_top_n_only_run_writes_the_same_recommendations(scored, trained, tmp_path):
    # Top-N-only runs rank with the ranking graphs and rate the chosen pairs with the pairwise graphs.
    out = tmp_path / "recs-only"
    result = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", str(out),
                     "--top-n", str(TOP_N), "--tables", "recommendations", block_torch=True)
    assert result.returncode == 0, result.stderr
    assert not (out / "latest" / "predictions").exists()
    keys = ["model", "user_id", "rank"]
    ours = read(out / "latest", "recommendations").sort_values(keys).reset_index(drop=True)
    full = read(scored / "latest", "recommendations").sort_values(keys).reset_index(drop=True)
    assert len(ours) == len(full) > 0
    for column in ("model", "user_id", "rank", "item_id", "logit"):
        assert (ours[column] == full[column]).all(), column
    np.testing.assert_allclose(ours["prediction"], full["prediction"], rtol=0, atol=4e-5)
    assert run_cli("evaluation.verify", "--run", str(out / "latest")).returncode == 0


@pytest.mark.parametrize("model", ["mf", "lstm"])
def test_rating_chosen_pairs_in_batches_gives_the_same_ratings(trained, model, monkeypatch):
    from scoring import sessions
    bundle = load_bundle(trained / "latest", [model])
    scorer = sessions.ModelScorer.open(bundle.graphs(model), bundle.context, threads=1, ranking_only=True)
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, bundle.n_users, 1_000), rng.integers(0, bundle.n_items, 1_000)
    whole = scorer.rate_pairs(users, items)
    monkeypatch.setattr(sessions, "RATE_BATCH", 97)
    batched = scorer.rate_pairs(users, items)
    for output in ("unit_rating", "rating", "logit"):
        np.testing.assert_allclose(getattr(whole, output), getattr(batched, output), rtol=0, atol=1e-6)


def test_make_verify_compares_every_row_with_torch(scored):
    result = run_cli("evaluation.verify", "--run", str(scored / "latest"))
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)["verified"]
    assert set(figures) == set(MODEL_NAMES)
    assert all(f["max_abs_diff_rating"] <= 4e-5 for f in figures.values())


def test_verify_fails_on_a_tampered_table(scored, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scored / "latest", run)
    path = run / "predictions" / "model=mf" / "part-00000.parquet"
    table = pq.read_table(path)
    values = table.column("prediction").to_numpy().copy()
    values[17] = 5.0 if values[17] < 4 else 1.0
    pq.write_table(table.set_column(2, "prediction", [values.astype(np.float32)]), path)
    result = run_cli("evaluation.verify", "--run", str(run))
    assert result.returncode != 0
    assert "differs from torch" in result.stderr and "model=mf" in result.stderr


def test_verify_fails_on_a_list_in_the_wrong_order(scored, tmp_path):
    # Ranks 1 and 2 of one user swapped, each row keeping its own item's prediction and logit: only
    # the comparison of the lists with torch's can tell.
    run = tmp_path / "run"
    shutil.copytree(scored / "latest", run)
    path = run / "recommendations" / "model=mf" / "part-00000.parquet"
    table = pq.read_table(path)
    frame = table.to_pandas()
    logits = frame.pivot(index="user_id", columns="rank", values="logit")
    user = int((logits[1] - logits[2]).idxmax())   # the clearest gap between first and second
    first = frame.index[(frame["user_id"] == user) & (frame["rank"] == 1)][0]
    second = frame.index[(frame["user_id"] == user) & (frame["rank"] == 2)][0]
    frame.loc[[first, second], "rank"] = np.array([2, 1], np.int16)
    frame = frame.sort_values(["user_id", "rank"]).reset_index(drop=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), path)
    result = run_cli("evaluation.verify", "--run", str(run))
    assert result.returncode == 1, result.stderr
    assert f"user_id {user} rank " in result.stderr and "torch ranks item_id" in result.stderr
    assert "model=mf" in result.stderr


def test_torch_weights_that_do_not_fit_the_model_are_named(trained, tmp_path):
    import torch
    from evaluation.torch_models import load_torch_model
    from contract.errors import BundleError
    bundle_dir = tmp_path / "bundle"
    shutil.copytree((trained / "latest").resolve(), bundle_dir)
    weights = torch.load(bundle_dir / "lstm.pt", weights_only=True)
    del weights["user_input.weight"]   # what a bundle of the LSTM before its input projection holds
    torch.save(weights, bundle_dir / "lstm.pt")
    with pytest.raises(BundleError, match=r"lstm\.pt: these weights do not fit this code's lstm model"):
        load_torch_model(load_bundle(bundle_dir), "lstm")


def test_same_seed_gives_identical_tables(trained, synthetic_dir, tmp_path):
    artifacts = tmp_path / "again"
    result = run_cli("export", "--data-dir", str(synthetic_dir), "--artifacts", str(artifacts),
                     *QUICK_ARGS)
    assert result.returncode == 0, result.stderr
    outputs = []
    for root in (trained, artifacts):
        out = tmp_path / f"out-{root.name}"
        assert run_cli("scoring", "--bundle", str(root / "latest"), "--output-root", str(out),
                       "--top-n", str(TOP_N)).returncode == 0
        outputs.append(out / "latest")
    assert table_contents(outputs[0]) == table_contents(outputs[1])   # the same rows, the same model versions
    assert manifest(outputs[0])["run_id"] != manifest(outputs[1])["run_id"]


def test_unchanged_inputs_reuse_the_bundle(trained, synthetic_dir):
    before = (trained / "latest").resolve()
    result = run_cli("export", "--data-dir", str(synthetic_dir), "--artifacts", str(trained),
                     *QUICK_ARGS)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stderr
    assert (trained / "latest").resolve() == before


def test_a_failed_run_leaves_latest_untouched(scored, trained, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(trained / "latest", bundle)
    graph = bundle / "lstm.all_items.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    before = {p: p.read_bytes() for p in (scored / "latest").rglob("*") if p.is_file()}
    link = (scored / "latest").resolve()
    result = run_cli("scoring", "--bundle", str(bundle), "--output-root", str(scored))
    assert result.returncode != 0
    assert "lstm.all_items.onnx" in result.stderr and "sha256" in result.stderr
    assert (scored / "latest").resolve() == link
    assert {p: p.read_bytes() for p in (scored / "latest").rglob("*") if p.is_file()} == before
    assert not list(scored.glob(".staging-*"))


@pytest.mark.parametrize("args, message", [
    (["--top-n", "0"], "--top-n: expected a positive integer, got 0"),
    (["--models", "mf,svd"], "--models: unknown name ['svd']"),
    (["--chunk-pairs", "0"], "--chunk-pairs and --threads: expected positive integers"),
])
def test_bad_options_exit_non_zero_with_a_message(trained, tmp_path, args, message):
    result = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "latest").exists()


def test_chunk_size_follows_the_graphs_a_run_needs(tmp_path):
    from scoring.runner import DEFAULT_CHUNK_PAIRS, RANKING_CHUNK_PAIRS, ScoringOptions
    both = ScoringOptions(bundle=tmp_path, output_root=tmp_path)
    top_n_only = ScoringOptions(bundle=tmp_path, output_root=tmp_path, tables=("recommendations",))
    assert both.pairs_per_call == DEFAULT_CHUNK_PAIRS < RANKING_CHUNK_PAIRS == top_n_only.pairs_per_call
    assert ScoringOptions(bundle=tmp_path, output_root=tmp_path, tables=("recommendations",),
                          chunk_pairs=1_000).pairs_per_call == 1_000


def test_handing_chunks_to_the_writer_in_groups_changes_no_table(trained, tmp_path, monkeypatch):
    from scoring import model_pass, runner
    tables = {}
    for sink_pairs in (1, 7 * N_ITEMS):  # each 2-user chunk alone; 8 users at a time, a short last group
        monkeypatch.setattr(model_pass, "SINK_PAIRS", sink_pairs)
        options = runner.ScoringOptions(bundle=trained / "latest", output_root=tmp_path / str(sink_pairs),
                                        top_n=TOP_N, chunk_pairs=2 * N_ITEMS, report=False)
        run = runner.run_scoring(options)
        tables[sink_pairs] = {t: read(run, t) for t in ("predictions", "recommendations")}
    for table, ours in tables[7 * N_ITEMS].items():
        assert len(ours) > 0 and ours.equals(tables[1][table]), table


def test_training_on_cuda_without_a_gpu_is_refused_before_any_work(synthetic_dir, tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so the refusal is checked on GPU machines too.
    result = run_cli("export", "--data-dir", str(synthetic_dir), "--artifacts", str(tmp_path / "a"),
                     "--device", "cuda", env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert "--device cuda: this torch build sees no CUDA device" in result.stderr
    assert not (tmp_path / "a").exists()


def test_scoring_imports_and_runs_without_torch(scored):
    # The `scored` fixture ran the whole job with `import torch` made to fail; check it again here.
    result = run_cli("scoring", "--help", block_torch=True)
    assert result.returncode == 0 and "--top-n" in result.stdout
    probe = run_cli("scoring", "--bundle", "/nonexistent", "--output-root", str(scored), block_torch=True)
    assert "No module named" not in probe.stderr and "model bundle directory not found" in probe.stderr


@pytest.mark.parametrize("module", ["export", "export.data.fetch", "evaluation.verify", "evaluation", "benchmarks.bench",
                                    "scoring", "scoring.report"])
def test_every_command_has_help(module):
    result = run_cli(module, "--help")
    assert result.returncode == 0
    assert "usage: python -m " + module in result.stdout
