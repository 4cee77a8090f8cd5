"""Bad input, crashes and concurrent runs: every failure exits non-zero with a message naming the
file, line or field, and the published ``latest`` (models and tables) stays byte-for-byte intact."""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import QUICK_ARGS, ROOT, run_cli, table_contents
from contract.bundle_format import MANIFEST, SCHEMA_VERSION
from contract import retention
from contract.failpoints import ENVIRONMENT_VARIABLE, SCORING_POINTS
from contract.publish import RootLock

GOOD_LINE = "1\t1\t5\t881250949\n"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root/latest``, with where the link points."""
    latest = root / "latest"
    files = {str(p.relative_to(latest)): p.read_bytes() for p in sorted(latest.rglob("*")) if p.is_file()}
    files["<link>"] = os.readlink(latest).encode()
    return files


@pytest.fixture()
def published(trained, scored):
    """Snapshots of the published bundle and run, checked unchanged after each test."""
    before = snapshot(trained), snapshot(scored)
    yield
    assert (snapshot(trained), snapshot(scored)) == before
    assert not list(scored.glob(".staging-*")) and not list(trained.glob(".staging-*"))


RATINGS_CASES = {
    "missing": (None, "file not found"),
    "empty": ("", "file is empty"),
    "directory": ("<dir>", "folder holds no data files"),
    "wrong_fields": (GOOD_LINE + "1\t2\t3\n", "line 2: expected 4 fields separated by tabs, got 3"),
    "missing_column": ("userId,rating\n1,4\n", "no item column; columns found: userId, rating"),
    "mixed_ids": (GOOD_LINE + "1\tabc\t3\t5\n", "line 2, column '1': item id 'abc' is text where"),
    "rating_off_scale": (GOOD_LINE + "1\t2\t7\t5\n", "line 2, column '2': expected a rating from 1 to 5 "
                                                  "(--rating-scale), got 7"),
    "rating_nan": (GOOD_LINE + "1\t2\tNaN\t5\n", "line 2, column '2': expected a finite number, got nan"),
    "negative_timestamp": (GOOD_LINE + "1\t2\t3\t-5\n", "line 2, column '3': expected Unix seconds >= 0, got -5"),
    "fractional_timestamp": (GOOD_LINE + "1\t2\t3\t5.5\n", "line 2, column '3': expected whole Unix seconds, got 5.5"),
    "duplicate_pair": (GOOD_LINE + "2\t2\t3\t5\n1\t1\t4\t9\n", "user 1 rated item 1 more than once"),
    "not_utf8": (b"1\t1\t5\t1\n\xff\xfe\t1\t5\t1\n", "not valid utf-8 text"),
}


@pytest.mark.parametrize("case", sorted(RATINGS_CASES))
def test_bad_ratings_file_is_named_and_nothing_is_lost(case, tmp_path, trained, synthetic_dir, published):
    content, message = RATINGS_CASES[case]
    bad = tmp_path / "bad.data"
    if content == "<dir>":
        bad.mkdir()
    elif isinstance(content, bytes):
        bad.write_bytes(content)
    elif content is not None:
        bad.write_text(content)
    result = run_cli("export", "--train-file", str(bad), "--test-file", str(synthetic_dir / "u.data"),
                     "--rating-scale", "1,5", "--artifacts", str(trained), "--force")
    assert result.returncode == 1, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(bad) in error and message in error
    assert "Traceback" not in result.stderr


def test_a_training_worker_that_dies_is_named_and_nothing_is_lost(trained, synthetic_dir, published):
    # As if the OOM killer took a worker: each worker SIGKILLs itself once set up.
    result = run_cli("export", "--data-dir", str(synthetic_dir), "--artifacts", str(trained), "--force",
                     "--jobs", "2", "--max-epochs", "1", env={ENVIRONMENT_VARIABLE: "training_worker_started"})
    assert result.returncode == 1, result.stderr
    assert "a training worker process died" in result.stderr and "--jobs 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_windows_line_endings_train_like_unix_ones(tmp_path, synthetic_dir):
    crlf = tmp_path / "crlf"
    crlf.mkdir()
    (crlf / "u.data").write_bytes((synthetic_dir / "u.data").read_bytes().replace(b"\n", b"\r\n"))
    results = []
    for folder in (synthetic_dir, crlf):
        out = tmp_path / f"a-{folder.name}"
        result = run_cli("export", "--data-dir", str(folder), "--artifacts", str(out), "--models", "mf",
                         "--max-epochs", "2")
        assert result.returncode == 0, result.stderr
        results.append(json.loads((out / "latest" / MANIFEST).read_text())["models"]["mf"]["test_metrics"])
    assert results[0] == results[1]


def test_cold_start_test_users_and_items_are_reported_not_fatal(tmp_path, synthetic_dir):
    test = tmp_path / "test.data"
    test.write_text("1\t1\t5\t881250949\n9999\t1\t4\t881250949\n1\t8888\t3\t881250949\n")
    result = run_cli("export", "--train-file", str(synthetic_dir / "u.data"), "--test-file", str(test),
                     "--artifacts", str(tmp_path / "a"), "--models", "mf", "--max-epochs", "2")
    assert result.returncode == 0, result.stderr
    assert "2 ratings of users or items with no training rating are left out" in result.stderr
    manifest = json.loads((tmp_path / "a" / "latest" / MANIFEST).read_text())
    assert manifest["data"]["cold_start_test_dropped"] == 2


def copy_bundle(trained: Path, tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree((trained / "latest").resolve(), bundle)
    return bundle


def rewrite_manifest(bundle: Path, change) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    change(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def refresh_checksum(bundle: Path, name: str) -> None:
    from contract.checksums import sha256_file
    rewrite_manifest(bundle, lambda m: m["files"].__setitem__(name, sha256_file(bundle / name)))


def break_missing(bundle):
    (bundle / "dense.all_items.onnx").unlink()
    return "dense.all_items.onnx: bundle file is missing"


def break_truncated(bundle):
    path = bundle / "mf.all_items.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    return "mf.all_items.onnx: sha256"


def break_corrupted_with_matching_checksum(bundle):
    path = bundle / "mf.all_items.onnx"
    path.write_bytes(b"\x08\x07garbage" * 100)
    refresh_checksum(bundle, path.name)
    return "mf.all_items.onnx: onnxruntime cannot load this model"


def break_manifest_checksum(bundle):
    rewrite_manifest(bundle, lambda m: m["files"].__setitem__("context.npz", "0" * 64))
    return "context.npz: sha256"


def break_unknown_feed(bundle):
    rewrite_manifest(bundle, lambda m: m["models"]["mf"]["graphs"]["all_items"].__setitem__(
        "inputs", ["user", "weather"]))
    return "model 'mf', graph 'all_items': inputs ['weather'] are not feeds this code can build"


def break_schema_version(bundle):
    rewrite_manifest(bundle, lambda m: m.__setitem__("schema_version", SCHEMA_VERSION + 1))
    return f"field 'schema_version' is {SCHEMA_VERSION + 1}"


def break_manifest_json(bundle):
    (bundle / MANIFEST).write_text("{not json")
    return "not a readable JSON manifest"


def break_inputs(bundle):
    shutil.copy(bundle / "lstm.all_items.onnx", bundle / "mf.all_items.onnx")
    refresh_checksum(bundle, "mf.all_items.onnx")
    return "mf.all_items.onnx: graph inputs are"


def break_reference(bundle):
    path = bundle / "reference.npz"
    with np.load(path) as data:
        arrays = dict(data)
    arrays["dense_unit_ratings"] = arrays["dense_unit_ratings"] + 1e-3
    np.savez(path, **arrays)
    refresh_checksum(bundle, path.name)
    return "model 'dense' differs from the torch reference"


@pytest.mark.parametrize("breaker", [break_missing, break_truncated, break_corrupted_with_matching_checksum,
                                     break_manifest_checksum, break_schema_version, break_manifest_json,
                                     break_inputs, break_reference, break_unknown_feed], ids=lambda f: f.__name__[6:])
def test_broken_bundle_is_named_and_nothing_is_published(breaker, tmp_path, trained, scored, published):
    bundle = copy_bundle(trained, tmp_path)
    message = breaker(bundle)
    result = run_cli("scoring", "--bundle", str(bundle), "--output-root", str(scored), "--no-report")
    assert result.returncode == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_ranking_graph_with_the_wrong_outputs_stops_a_top_n_only_run(tmp_path, trained, scored, published):
    bundle = copy_bundle(trained, tmp_path)
    shutil.copy(bundle / "dense.all_items.onnx", bundle / "dense.ranking.onnx")
    refresh_checksum(bundle, "dense.ranking.onnx")
    result = run_cli("scoring", "--bundle", str(bundle), "--output-root", str(scored), "--no-report",
                     "--tables", "recommendations")
    assert result.returncode == 1, result.stderr
    assert "dense.ranking.onnx: graph outputs are" in result.stderr and "expected ['logit']" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--models", "mf,bpr"], "--models: unknown name ['bpr']"),
    (["--tables", "scores"], "--tables: unknown name ['scores']"),
    (["--top-n", "0"], "--top-n: expected a positive integer"),
    (["--top-n", "-3"], "--top-n: expected a positive integer"),
])
def test_bad_options(args, message, trained, scored, published):
    result = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", str(scored), *args)
    assert result.returncode == 2 and message in result.stderr


def test_output_root_that_is_a_file_or_not_writable(tmp_path, trained):
    (tmp_path / "file").write_text("")
    result = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", str(tmp_path / "file"))
    assert result.returncode == 1 and "output root exists but is not a directory" in result.stderr
    result = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", "/proc/recjob-out")
    assert result.returncode == 1 and "/proc/recjob-out: cannot create output root" in result.stderr


def limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))


def test_a_disk_that_fills_up_during_the_write(trained, scored, published):
    # RLIMIT_FSIZE makes any file larger than 16 kB fail to grow: the first big Parquet write fails
    # part-way, as it would on a full disk.
    command = [sys.executable, "-m", "scoring", "--bundle", str(trained / "latest"), "--output-root", str(scored)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, preexec_fn=limit_file_size,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "/predictions/model=mf/part-00000.parquet: write failed" in error and "File too large" in error


@pytest.fixture(scope="module")
def crash_root(trained, tmp_path_factory) -> Path:
    """An output root with one published run, shared by the kill tests."""
    root = tmp_path_factory.mktemp("crash") / "out"
    assert run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", str(root),
                   "--no-report").returncode == 0
    return root


def assert_complete(run: Path) -> None:
    from contract.checksums import sha256_file
    manifest = json.loads((run / "manifest.json").read_text())
    assert (run / "_SUCCESS").exists()
    assert {f: sha256_file(run / f) for f in manifest["files"]} == manifest["files"]


@pytest.mark.parametrize("point", SCORING_POINTS)
def test_sigkill_at_any_point_leaves_a_complete_latest_and_the_next_run_recovers(point, trained, crash_root):
    args = ("scoring", "--bundle", str(trained / "latest"), "--output-root", str(crash_root), "--no-report")
    before = (crash_root / "latest").resolve()
    # Keeping one run makes every run prune, so "mid_prune" is reached however many runs there are.
    killed = run_cli(*args, "--keep", "1", env={ENVIRONMENT_VARIABLE: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    latest = (crash_root / "latest").resolve()
    assert latest == before or point in ("after_latest_switch", "mid_prune")
    for run in retention.published(crash_root):   # what is left is whole, whatever was being removed
        assert_complete(run)
    assert_complete(latest)
    assert_complete(crash_root / (crash_root / "_LATEST").read_text().strip())   # written last: never ahead
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert not list(crash_root.glob(".staging-*"))
    assert (crash_root / "latest").resolve() not in (before, latest)
    assert_complete((crash_root / "latest").resolve())
    assert (crash_root / "_LATEST").read_text().strip() == (crash_root / "latest").resolve().name


def test_after_all_the_kills_latest_still_matches_torch(crash_root):
    verify = run_cli("evaluation.verify", "--run", str(crash_root / "latest"))
    assert verify.returncode == 0, verify.stderr


def test_a_second_run_on_the_same_root_is_refused_or_waits(trained, scored, published):
    with RootLock(scored):
        refused = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", str(scored))
    assert refused.returncode == 75
    assert "another run" in refused.stderr and "--wait" in refused.stderr


def test_a_second_training_into_the_same_artifacts_root_is_refused_before_it_trains(trained, synthetic_dir):
    before = sorted(p.name for p in trained.iterdir())
    with RootLock(trained):
        refused = run_cli("export", "--data-dir", str(synthetic_dir), "--artifacts", str(trained), "--force",
                          *QUICK_ARGS)
    assert refused.returncode == 75
    assert "another run" in refused.stderr and "wait for it to finish" in refused.stderr
    assert "--wait" not in refused.stderr   # python -m export has no such option
    assert "epoch" not in refused.stderr     # refused before training, not after it
    assert sorted(p.name for p in trained.iterdir()) == before


def test_two_runs_started_at_once_both_finish_one_after_the_other(trained, tmp_path):
    root = tmp_path / "out"
    command = [sys.executable, "-m", "scoring", "--bundle", str(trained / "latest"), "--output-root", str(root),
               "--wait", "--no-report"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err.splitlines()[-3:] for _, err in outputs]
    published = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    assert len(published) == 2
    manifests = [json.loads((p / "manifest.json").read_text()) for p in published]
    assert table_contents(published[0]) == table_contents(published[1])
    assert manifests[0]["inputs_hash"] == manifests[1]["inputs_hash"]
    assert manifests[0]["run_id"].split("-")[-1] == manifests[1]["run_id"].split("-")[-1]


def test_runs_of_the_same_inputs_in_one_clock_tick_both_publish(trained, tmp_path, monkeypatch):
    from datetime import datetime, timezone
    from scoring import runner
    tick = datetime(2026, 12, 1, 5, 1, 8, 329926, tzinfo=timezone.utc)

    class StoppedClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return tick

    monkeypatch.setattr(runner, "datetime", StoppedClock)
    options = runner.ScoringOptions(bundle=trained / "latest", output_root=tmp_path, report=False)
    first, second = runner.run_scoring(options), runner.run_scoring(options)
    assert first.name.startswith("20261201T050108329926Z-") and second.name.startswith("20261201T050108329927Z-")
    assert (tmp_path / "latest").resolve() == second
    assert json.loads((second / "manifest.json").read_text())["run_id"] == second.name


def test_a_row_count_mismatch_stops_the_publish(trained, tmp_path, monkeypatch):
    from contract.errors import VerificationError
    from scoring import runner
    from scoring import tables as table_registry
    monkeypatch.setattr(table_registry.get("predictions"), "expected_rows", lambda bundle, settings: 7)
    options = runner.ScoringOptions(bundle=trained / "latest", output_root=tmp_path, report=False)
    with pytest.raises(VerificationError, match="expected 7"):
        runner.run_scoring(options)
    assert not (tmp_path / "latest").exists() and not list(tmp_path.glob(".staging-*"))
