"""Running every night unattended: the model gate, run-to-run figures, retention (with kills),
the exit codes schedulers act on, JSON logs, the metrics file, provenance in every Parquet file,
--as-of, and the examples that schedule it. Everything goes through the real CLIs."""
from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import signal
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import QUICK_ARGS, TABLES, run_cli
from contract import retention
from contract.failpoints import ENVIRONMENT_VARIABLE
from contract.publish import RootLock
from contract.tables import RUN_SCHEMA_VERSION
from export.bundle import bundles_in_use
from export.models import registry

pytestmark = pytest.mark.slow


def bundle_manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def score(bundle: Path, root: Path, *extra: str, env: dict | None = None):
    return run_cli("scoring", "--bundle", str(bundle), "--output-root", str(root), "--top-n", "5", "--no-report",
                   *extra, env=env)


@pytest.fixture(scope="module")
def gated(trained, synthetic_dir, tmp_path_factory):
    """A copy of the trained root, then an undertrained bundle refused by the gate, then the same
    accepted with --accept-worse: (root, first bundle, refused run, refused bundle, accepted run,
    the refused run's metrics file)."""
    root = tmp_path_factory.mktemp("gated") / "artifacts"
    shutil.copytree(trained, root, symlinks=True)
    first = (root / "latest").resolve()
    undertrained = ("export", "--data-dir", str(synthetic_dir), "--artifacts", str(root), "--output-root",
                    str(root.parent / "output"), "--force", "--max-epochs", "1", "--seed", "3")
    metrics = root.parent / "export.prom"
    refused = run_cli(*undertrained, "--metrics-file", str(metrics))
    refused_bundle = next(p for p in retention.published(root) if p != first)
    accepted = run_cli(*undertrained, "--accept-worse")
    return root, first, refused, refused_bundle, accepted, metrics


def test_the_first_bundle_passes_the_gate_with_nothing_to_compare(trained):
    gate = bundle_manifest((trained / "latest").resolve())["gate"]
    assert gate["previous_bundle"] is None and gate["passed"] and gate["published_as_latest"]


def test_the_gate_refuses_an_undertrained_bundle_and_keeps_latest(gated):
    root, first, refused, refused_bundle, *_ = gated
    assert refused.returncode == 3, refused.stderr
    (error,) = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert "model gate: model '" in error and "worse than the current bundle's" in error
    assert str(refused_bundle) in error and "--accept-worse" in error
    gate = bundle_manifest(refused_bundle)["gate"]
    assert not gate["passed"] and not gate["published_as_latest"] and gate["previous_bundle"] == first.name
    worse = [m for m, f in gate["models"].items() if not f["passed"]]
    assert worse and all(gate["models"][m]["rmse"] > gate["models"][m]["previous_rmse"] * 1.01
                         or gate["models"][m]["ndcg_at_10"] < gate["models"][m]["previous_ndcg_at_10"] * 0.99
                         for m in worse)
    assert (refused_bundle / "_SUCCESS").is_file()   # kept, whole, beside the others


def test_accept_worse_publishes_it_and_records_the_comparison(gated):
    root, first, _, _, accepted, _ = gated
    assert accepted.returncode == 0, accepted.stderr
    latest = (root / "latest").resolve()
    assert latest != first and (root / "_LATEST").read_text().strip() == latest.name
    gate = bundle_manifest(latest)["gate"]
    assert not gate["passed"] and gate["published_as_latest"] and gate["accept_worse"]


def test_a_rerun_on_the_same_bundle_changes_nothing(trained, scored, tmp_path):
    root = tmp_path / "out"
    shutil.copytree(scored, root, symlinks=True)
    result = score(trained / "latest", root)
    assert result.returncode == 0, result.stderr
    drift = json.loads((root / "latest" / "manifest.json").read_text())["drift"]
    assert drift["previous_run"] == (scored / "latest").resolve().name
    assert set(drift["models"]) == set(registry.names())
    for figures in drift["models"].values():
        assert figures["users_compared"] > 0 and figures["pairs_compared"] > 0
        assert figures["topn_changed_share"] == 0 and figures["prediction_max_abs_change"] == 0
        assert figures["coverage"] == figures["previous_coverage"] > 0


def test_a_threshold_refuses_a_run_whose_lists_changed_too_much(gated, scored, tmp_path):
    root = tmp_path / "out"
    shutil.copytree(scored, root, symlinks=True)
    before = (root / "latest").resolve()
    changed = gated[0] / "latest"   # the undertrained bundle: other lists
    refused = score(changed, root, "--max-topn-change", "0.05")
    assert refused.returncode == 3, refused.stderr
    assert "--max-topn-change: model '" in refused.stderr and "nothing was published" in refused.stderr
    assert (root / "latest").resolve() == before and not list(root.glob(".staging-*"))
    allowed = score(changed, root, "--max-topn-change", "1")
    assert allowed.returncode == 0, allowed.stderr
    drift = json.loads((root / "latest" / "manifest.json").read_text())["drift"]
    # --max-epochs 1 undertrains the families trained by epochs; a closed-form one is solved alike.
    trained_by_epochs = {m: f for m, f in drift["models"].items() if not registry.get(m).closed_form}
    assert trained_by_epochs and all(f["topn_changed_share"] > 0.05 and f["prediction_mean_abs_change"] > 0
                                     for f in trained_by_epochs.values())


def test_every_parquet_file_says_which_run_bundle_and_model_wrote_it(scored):
    run = (scored / "latest").resolve()
    manifest = json.loads((run / "manifest.json").read_text())
    files = sorted(run.rglob("*.parquet"))
    assert len(files) == len(TABLES) * len(registry.names())   # a file per table and model
    for path in files:
        meta = {k.decode(): v.decode() for k, v in pq.read_schema(path).metadata.items()}
        model = path.parent.name.removeprefix("model=")
        assert meta["recjob.run_id"] == run.name and meta["recjob.bundle_id"] == manifest["bundle"]["bundle_id"]
        assert meta["recjob.model"] == model and meta["recjob.table"] == path.parent.parent.name
        assert meta["recjob.model_version"] == manifest["model_versions"][model]
        assert meta["recjob.run_schema_version"] == str(RUN_SCHEMA_VERSION)


def test_retention_keeps_the_newest_runs_and_survives_a_kill_while_pruning(trained, tmp_path):
    root = tmp_path / "out"
    for _ in range(3):
        assert score(trained / "latest", root, "--keep", "2").returncode == 0
    assert len(retention.published(root)) == 2
    killed = score(trained / "latest", root, "--keep", "1", env={ENVIRONMENT_VARIABLE: "mid_prune"})
    assert killed.returncode == -signal.SIGKILL
    latest = (root / "latest").resolve()
    left = retention.published(root)
    assert latest in left and len(left) == 2 and len(list(root.glob(".staging-pruned-*"))) == 1
    for run in left:
        assert (run / "_SUCCESS").is_file() and (run / "manifest.json").is_file()
    assert score(trained / "latest", root, "--keep", "1").returncode == 0
    assert retention.published(root) == [(root / "latest").resolve()]
    assert not list(root.glob(".staging-*"))


def test_bundle_retention_spares_bundles_that_kept_runs_were_scored_from(gated, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(gated[0], root, symlinks=True)
    bundles = retention.published(root)
    assert len(bundles) == 3
    runs = tmp_path / "output"
    assert score(bundles[0], runs).returncode == 0     # a kept run read the oldest bundle
    # A run in progress reading the second: its staging folder names it.
    (runs / ".staging-inprogress").mkdir()
    (runs / ".staging-inprogress" / "_BUNDLE").write_text(bundles[1].name)
    assert retention.prune(root, 1, bundles_in_use(runs)) == []
    assert retention.prune(root, 1) == [bundles[0].name, bundles[1].name]
    assert retention.published(root) == [(root / "latest").resolve()]


@pytest.mark.parametrize("case", ["published", "error", "usage", "locked"])
def test_exit_codes_schedulers_act_on(case, trained, tmp_path):
    root = tmp_path / "out"
    if case == "published":
        result = score(trained / "latest", root)
        want = 0
    elif case == "error":
        result = run_cli("export", "--ratings", str(tmp_path / "missing.csv"), "--artifacts", str(tmp_path / "a"))
        want = 1
    elif case == "usage":
        result = score(trained / "latest", root, "--keep", "-1")
        want = 2
    else:
        root.mkdir()
        with RootLock(root):
            result = score(trained / "latest", root)
        want = 75
    assert result.returncode == want, result.stderr
    # (3, refused, is tested with the gate and the thresholds above.)


def test_json_logs_are_one_object_per_line_errors_included(trained, tmp_path):
    ok = score(trained / "latest", tmp_path / "out", "--log-format", "json")
    assert ok.returncode == 0, ok.stderr
    entries = [json.loads(line) for line in ok.stderr.splitlines()]
    assert entries and all({"time", "level", "stage", "message"} <= set(e) for e in entries)
    assert any(e["stage"] == "published" and "run_id" in e["figures"] for e in entries)
    failed = score(tmp_path / "no-bundle", tmp_path / "out", "--log-format", "json")
    assert failed.returncode == 1
    (last,) = [json.loads(line) for line in failed.stderr.splitlines()][-1:]
    assert last["level"] == "error" and last["exit_code"] == 1 and "no-bundle" in last["message"]


def test_the_metrics_file_is_prometheus_text_on_success_and_failure(trained, tmp_path):
    metrics = tmp_path / "scoring.prom"
    assert score(trained / "latest", tmp_path / "out").returncode == 0   # a previous run to compare with
    assert score(trained / "latest", tmp_path / "out", "--metrics-file", str(metrics)).returncode == 0
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    assert families["recjob_scoring_exit_code"].samples[0].value == 0
    rows = {(s.labels["table"], s.labels["model"]): s.value for s in families["recjob_scoring_rows"].samples}
    assert rows[("predictions", "mf")] == 100 * 60
    assert {"recjob_scoring_stage_seconds", "recjob_scoring_parity_max_abs_diff",
            "recjob_scoring_drift_topn_changed_share", "recjob_scoring_last_run_timestamp_seconds"} <= set(families)
    root = tmp_path / "out"
    with RootLock(root):
        assert score(trained / "latest", root, "--metrics-file", str(metrics)).returncode == 75
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    assert families["recjob_scoring_exit_code"].samples[0].value == 75
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_refused_bundle_s_metrics_carry_the_gate(gated):
    families = {f.name: f for f in text_string_to_metric_families(gated[5].read_text())}
    assert families["recjob_export_exit_code"].samples[0].value == 3
    assert families["recjob_export_gate_passed"].samples[0].value == 0
    rmse = {s.labels["model"]: s.value for s in families["recjob_export_gate_rmse"].samples}
    before = {s.labels["model"]: s.value for s in families["recjob_export_gate_previous_rmse"].samples}
    assert set(rmse) == set(registry.names()) and any(rmse[m] > before[m] for m in rmse)


def test_as_of_trains_on_the_ratings_up_to_then_and_reuses_an_unchanged_selection(synthetic_dir, tmp_path):
    times = sorted(int(line.split("\t")[3]) for line in (synthetic_dir / "u.data").read_text().splitlines())
    middle = times[len(times) // 2]
    args = ("export", "--data-dir", str(synthetic_dir), "--artifacts", str(tmp_path / "a"), "--output-root",
            str(tmp_path / "o"), "--models", "mf", "--max-epochs", "2", "--accept-worse")
    first = run_cli(*args, "--as-of", str(middle))
    assert first.returncode == 0, first.stderr
    data = bundle_manifest((tmp_path / "a" / "latest").resolve())["data"]
    kept = sum(t <= middle for t in times)
    assert data["n_train"] + data["n_validation"] + data["n_test"] <= kept < len(times)
    again = run_cli(*args, "--as-of", datetime.fromtimestamp(middle, timezone.utc).isoformat())
    assert again.returncode == 0 and "is up to date" in again.stderr
    everything = run_cli(*args, "--as-of", "2100-01-01")   # selects every rating: the same as no --as-of
    plain = run_cli(*args)
    assert everything.returncode == 0 and plain.returncode == 0 and "is up to date" in plain.stderr
    bad = run_cli(*args, "--as-of", "yesterday")
    assert bad.returncode == 2 and "--as-of: expected Unix seconds or an ISO 8601 date" in bad.stderr


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def commands(text: str) -> list[list[str]]:
    """Each ``python -m export|scoring ...`` in ``text``, as words, up to a shell operator."""
    found = []
    for match in re.finditer(r"-m (export|scoring)\b([^;&|>\n\"]*)", text):
        found.append([match.group(1), *shlex.split(match.group(2).replace("{", "").replace("}", ""))])
    return found


@pytest.mark.parametrize("name", ["crontab", "recommender.service", "airflow_dag.py"])
def test_each_example_runs_commands_and_options_that_exist(name):
    from export.cli import build_parser as export_parser
    from scoring.cli import build_parser as scoring_parser
    text = (EXAMPLES / name).read_text()
    if name.endswith(".py"):
        tree = ast.parse(text)
        text = "\n".join(node.value for node in ast.walk(tree)
                         if isinstance(node, ast.Constant) and isinstance(node.value, str))
    found = commands(text)
    assert {c[0] for c in found} == {"export", "scoring"}, found
    parsers = {"export": export_parser(), "scoring": scoring_parser()}
    for stage, *words in found:
        options = [w for w in words if w.startswith("--")]
        assert options, (name, stage)
        for option in options:
            assert option in parsers[stage]._option_string_actions, (name, stage, option)
    if name == "crontab":
        (line,) = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert len(line.split()[:5]) == 5 and all(f == "*" or f.isdigit() for f in line.split()[:5])
    if name == "recommender.service":
        assert "RestartPreventExitStatus=1 2 3" in text and (EXAMPLES / "recommender.timer").is_file()


def test_a_retrain_on_more_data_is_judged_on_ratings_the_old_models_never_learnt(synthetic_dir, tmp_path):
    times = sorted(int(line.split("\t")[3]) for line in (synthetic_dir / "u.data").read_text().splitlines())
    args = ("export", "--data-dir", str(synthetic_dir), "--artifacts", str(tmp_path / "a"), "--output-root",
            str(tmp_path / "o"), "--models", "mf", *QUICK_ARGS)
    assert run_cli(*args, "--as-of", str(times[len(times) * 2 // 3])).returncode == 0
    result = run_cli(*args)   # every rating: the old bundle's history overlaps the new held-out set
    assert result.returncode == 0, result.stderr
    figures = bundle_manifest((tmp_path / "a" / "latest").resolve())["gate"]["models"]["mf"]
    assert figures["compared"] and figures["pairs_previous_trained_on"] > 0 and figures["pairs"] > 0
