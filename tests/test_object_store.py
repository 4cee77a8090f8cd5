"""Object stores as a place to read inputs and publish runs and bundles, against a real S3 API
(moto's server on 127.0.0.1, credentials checked), through the real CLIs."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import QUICK_ARGS, ROOT, SIMILAR_K, TABLES, run_cli, table_contents
from contract.checksums import sha256_file
from contract.errors import PublishError
from contract.failpoints import ENVIRONMENT_VARIABLE, STORE_POINTS
from contract.roots import StoreRoot
from contract.store import Store, mirror
from contract.store_lock import LEASE_ENVIRONMENT, LOCK_OBJECT, StoreLock

pytestmark = pytest.mark.slow

FAST = ("--tables", "recommendations", "--top-n", "5", "--no-report")


def score(s3, bundle: str, root: str, *args: str, env: dict | None = None):
    return run_cli("scoring", "--bundle", bundle, "--output-root", root, *args, env={**s3.env, **(env or {})},
                   block_torch=True)


def latest_of(s3, prefix: str) -> str:
    return s3.read(f"{prefix}/_LATEST").decode().strip()


def assert_whole(s3, prefix: str, run_id: str) -> None:
    """The run's folder holds its manifest, _SUCCESS and every file the manifest lists, unchanged."""
    keys = set(s3.keys(f"{prefix}/{run_id}/"))
    assert f"{prefix}/{run_id}/_SUCCESS" in keys
    manifest = json.loads(s3.read(f"{prefix}/{run_id}/manifest.json"))
    local = mirror(f"s3://{s3.name}/{prefix}/{run_id}")
    assert {f: sha256_file(local / f) for f in manifest["files"]} == manifest["files"]


def run_folders(s3, prefix: str) -> set[str]:
    return {k.split("/")[1] for k in s3.keys(f"{prefix}/") if k.count("/") >= 2}


def test_a_run_on_a_bucket_equals_the_local_run_and_the_next_run_measures_drift_against_it(s3, trained, scored):
    root = s3.uri("recs")
    args = ("--top-n", "5", "--tables", ",".join(TABLES), "--similar-k", str(SIMILAR_K), "--keep", "1")
    first = score(s3, str(trained / "latest"), root, *args)
    assert first.returncode == 0, first.stderr
    run_id = latest_of(s3, "recs")
    assert first.stdout.strip() == f"{root}/{run_id}"
    assert_whole(s3, "recs", run_id)
    copy = mirror(f"{root}/{run_id}")
    assert table_contents(copy) == table_contents((scored / "latest").resolve())

    second = score(s3, str(trained / "latest"), root, *args, "--metrics-file", s3.uri("metrics", "scoring.prom"))
    assert second.returncode == 0, second.stderr
    second_id = latest_of(s3, "recs")
    manifest = json.loads(s3.read(f"recs/{second_id}/manifest.json"))
    assert manifest["drift"]["previous_run"] == run_id
    assert all(m["topn_changed_share"] == 0.0 for m in manifest["drift"]["models"].values())
    assert run_folders(s3, "recs") == {second_id}   # --keep 1: the first run's folder is gone
    assert b"recjob_scoring_exit_code 0" in s3.read("metrics/scoring.prom")

    # What the README shows a reader doing: follow _LATEST, then read the tables (pyarrow, pandas, DuckDB).
    import duckdb
    import pyarrow.dataset as ds
    import pyarrow.fs
    fs, path = pyarrow.fs.FileSystem.from_uri(root)
    latest = fs.open_input_stream(f"{path}/_LATEST").read().decode().strip()
    recs = ds.dataset(f"{path}/{latest}/recommendations", filesystem=fs, partitioning="hive")
    frame = recs.to_table().to_pandas()
    assert set(frame["model"]) == set(manifest["models"])
    top = duckdb.sql("SELECT count(*) FROM recs WHERE rank = 1").fetchall()[0][0]
    assert top == len(frame.query("rank == 1")) > 0


def test_train_on_parquet_parts_in_a_bucket_publish_the_bundle_there_and_score_and_verify_from_it(
        s3, synthetic_dir, tmp_path):
    frame = pd.read_csv(synthetic_dir / "u.data", sep="\t", names=["user", "item", "stars", "when"])
    half = len(frame) // 2
    for i, part in enumerate((frame[:half], frame[half:])):
        local = tmp_path / f"part-{i}.parquet"
        part.to_parquet(local)
        s3.write(f"ratings/part-{i}.parquet", local.read_bytes())
    s3.write("items.csv", "item,title\n" + "".join(f"{i},Film {i}\n" for i in sorted(frame["item"].unique())))
    artifacts = s3.uri("artifacts")
    args = ("export", "--ratings", s3.uri("ratings"), "--columns", "user=user,item=item,rating=stars,timestamp=when",
            "--items", s3.uri("items.csv"), "--artifacts", artifacts, "--output-root", s3.uri("recs"), "--models",
            "mf,item_ae", *QUICK_ARGS)
    trained = run_cli(*args, env=s3.env)
    assert trained.returncode == 0, trained.stderr
    bundle_id = latest_of(s3, "artifacts")
    reused = run_cli(*args, env=s3.env)   # same data, settings and code: the bundle on the store is reused
    assert reused.returncode == 0 and "is up to date" in reused.stderr, reused.stderr
    assert latest_of(s3, "artifacts") == bundle_id
    assert f"artifacts/{bundle_id}/_SUCCESS" in s3.keys("artifacts/")
    manifest = json.loads(s3.read(f"artifacts/{bundle_id}/manifest.json"))
    assert sorted(manifest["data"]["files_md5"]) == [s3.uri("ratings", "part-0.parquet"),
                                                  s3.uri("ratings", "part-1.parquet")]

    scorer = {"RECJOB_CACHE_DIR": str(tmp_path / "scorer")}   # another machine: nothing cached yet
    scored = score(s3, artifacts, s3.uri("recs"), *FAST, env=scorer)
    assert scored.returncode == 0, scored.stderr
    assert "fetched from" in scored.stderr
    run_id = latest_of(s3, "recs")
    run_manifest = json.loads(s3.read(f"recs/{run_id}/manifest.json"))
    assert run_manifest["bundle"]["uri"] == f"{artifacts}/{bundle_id}"

    again = score(s3, f"{artifacts}/{bundle_id}", s3.uri("recs"), *FAST, env=scorer)   # by id, from the cache
    assert again.returncode == 0, again.stderr
    assert "fetched from" not in again.stderr

    verified = run_cli("evaluation.verify", "--run", s3.uri("recs"), env={**s3.env, "RECJOB_CACHE_DIR":
                                                                           str(tmp_path / "elsewhere")})
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["run"] == s3.uri("recs")


def test_a_bad_ratings_file_on_the_store_is_named_by_its_uri_and_row(s3, tmp_path):
    s3.write("bad/ratings.csv", b"user,item,rating\n1,2,4\n1,3,oops\n")
    failed = run_cli("export", "--ratings", s3.uri("bad", "ratings.csv"), "--artifacts", s3.uri("artifacts"),
                     *QUICK_ARGS, env=s3.env)
    assert failed.returncode == 1
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith(f"error: {s3.uri('bad', 'ratings.csv')}, line 3") and "oops" in line, line
    missing = run_cli("export", "--ratings", s3.uri("nothing.csv"), "--artifacts", s3.uri("artifacts"),
                      *QUICK_ARGS, env=s3.env)
    assert missing.returncode == 1 and missing.stderr.strip() == f"error: {s3.uri('nothing.csv')}: file not found"
    assert s3.keys("artifacts/") == []


def test_two_runs_started_at_once_on_one_root_one_publishes_and_one_exits_75(s3, trained):
    import subprocess
    import sys
    command = [sys.executable, "-m", "scoring", "--bundle", str(trained / "latest"), "--output-root",
               s3.uri("recs"), *FAST]
    env = {**os.environ, **s3.env, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    codes = sorted(run.wait(300) for run in runs)
    assert codes == [0, 75], [run.stderr.read() for run in runs]
    assert len(run_folders(s3, "recs")) == 1


def test_a_corrupted_bundle_file_on_the_store_is_refused(s3, trained):
    bundle = (trained / "latest").resolve()
    s3.put_bundle(bundle)
    victim = next(f for f in json.loads((bundle / "manifest.json").read_text())["files"] if f.endswith(".onnx"))
    s3.write(f"artifacts/{bundle.name}/{victim}", (bundle / victim).read_bytes()[:-7] + b"garbage")
    refused = score(s3, s3.uri("artifacts"), s3.uri("recs"), *FAST)
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert f"{s3.uri('artifacts', bundle.name, victim)}: sha256" in line and "refused" in line
    assert s3.keys("recs/") == []


def test_publishing_to_a_store_without_conditional_writes_is_refused_before_anything_runs(trained):
    refused = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", "gs://bucket/recs", *FAST)
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("error: gs://bucket/recs: publishing to gs:// needs conditional writes, which "
                                      "this job sends to s3:// only; publish to a local path or an s3:// URI "
                                      "(reading inputs and bundles from it works)")


@pytest.mark.parametrize("case", ["wrong_key", "no_bucket"])
def test_wrong_credentials_and_a_missing_bucket_are_one_clear_line(case, s3, trained):
    env = {"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0", "AWS_SECRET_ACCESS_KEY": "nope"} if case == "wrong_key" else {}
    root = s3.uri("recs") if case == "wrong_key" else "s3://recjob-no-such-bucket/recs"
    failed = score(s3, str(trained / "latest"), root, *FAST, env=env)
    assert failed.returncode == 1
    [line] = failed.stderr.strip().splitlines()
    expected = "access denied: check the credentials" if case == "wrong_key" else "the bucket does not exist"
    assert line.startswith(f"error: {root}") and expected in line, line


def test_a_second_run_on_a_leased_root_exits_75_or_waits(s3, trained):
    root = Store.open(s3.uri("recs"))
    with StoreLock(root):
        refused = score(s3, str(trained / "latest"), root.uri, *FAST)
    assert refused.returncode == 75
    assert "another run" in refused.stderr and "holds this root's lease" in refused.stderr
    assert s3.keys("recs/") == []

    holder = StoreLock(root).__enter__()
    threading.Timer(3.0, holder.__exit__, (None, None, None)).start()
    waited = score(s3, str(trained / "latest"), root.uri, *FAST, "--wait")
    assert waited.returncode == 0, waited.stderr
    assert s3.keys(f"recs/{LOCK_OBJECT}") == []   # released


def test_an_expired_lease_is_taken_over_and_what_its_run_left_is_removed(s3, trained):
    s3.write(f"recs/{LOCK_OBJECT}", json.dumps({"owner": "dead-host:1:x", "lease_seconds": 1}).encode())
    s3.write("recs/20260101T000000000000Z-0123456789/predictions/model=mf/part-00000.parquet", b"half")
    time.sleep(2.5)
    run = score(s3, str(trained / "latest"), s3.uri("recs"), *FAST)
    assert run.returncode == 0, run.stderr
    assert "took over the lease of dead-host:1:x" in run.stderr
    assert run_folders(s3, "recs") == {latest_of(s3, "recs")}


def test_a_publisher_that_finds_the_pointer_moved_publishes_nothing(s3, tmp_path):
    root = StoreRoot(s3.uri("recs"))
    s3.write("recs/_LATEST", b"20260101T000000000000Z-aaaaaaaaaa\n")
    assert root.latest() == s3.uri("recs", "20260101T000000000000Z-aaaaaaaaaa")
    s3.write("recs/_LATEST", b"20260102T000000000000Z-bbbbbbbbbb\n")   # another publisher won meanwhile
    staging = root.staging("20260103T000000000000Z-cccccccccc")
    (staging / "manifest.json").write_text("{}")
    (staging / "table.parquet").write_bytes(b"rows")
    with pytest.raises(PublishError, match="another publisher moved the pointer"):
        root.publish(staging, "20260103T000000000000Z-cccccccccc")
    assert latest_of(s3, "recs") == "20260102T000000000000Z-bbbbbbbbbb"
    assert s3.keys("recs/20260103") == []


@pytest.fixture(scope="module")
def crash_bucket(s3_server, trained, tmp_path_factory):
    """A bucket holding one published run, shared by the kill tests (short leases: a killed run's
    lease must expire before the next run can start)."""
    from object_store import Bucket
    cache = tmp_path_factory.mktemp("crash-cache")
    bucket = Bucket(s3_server.new_bucket(), s3_server, {**s3_server.env, LEASE_ENVIRONMENT: "1",
                                                        "RECJOB_CACHE_DIR": str(cache),
                                                        "RECJOB_STAGING_DIR": str(cache / "staging")})
    first = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", bucket.uri("recs"), *FAST,
                    env=bucket.env)
    assert first.returncode == 0, first.stderr
    return bucket


@pytest.fixture
def crash_store(crash_bucket, monkeypatch):
    """The crash bucket, its variables set in this process too (the checks read it here)."""
    import contract.store
    for key, value in crash_bucket.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(contract.store, "_CLIENT", None)
    return crash_bucket


@pytest.mark.parametrize("point", STORE_POINTS)
def test_sigkill_at_any_publish_point_on_the_store_leaves_latest_whole_and_the_next_run_cleans_up(
        point, trained, crash_store):
    s3 = crash_store
    args = ("scoring", "--bundle", str(trained / "latest"), "--output-root", s3.uri("recs"), *FAST)
    before = latest_of(s3, "recs")
    killed = run_cli(*args, "--keep", "1", env={**s3.env, ENVIRONMENT_VARIABLE: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    now = latest_of(s3, "recs")
    assert now == before or point in ("after_latest_switch", "mid_prune")
    assert_whole(s3, "recs", now)
    time.sleep(2.2)   # the dead run's lease expires
    again = run_cli(*args, env=s3.env)
    assert again.returncode == 0, again.stderr
    latest = latest_of(s3, "recs")
    assert latest not in (before, now)
    assert_whole(s3, "recs", latest)
    for folder in run_folders(s3, "recs"):   # nothing unfinished is left
        assert f"recs/{folder}/_SUCCESS" in s3.keys(f"recs/{folder}/")
    assert not list(Path(s3.env["RECJOB_STAGING_DIR"]).glob("recjob-staging/*/*"))


def test_after_all_the_kills_the_stores_latest_run_still_matches_torch(crash_store):
    verified = run_cli("evaluation.verify", "--run", crash_store.uri("recs"), env=crash_store.env)
    assert verified.returncode == 0, verified.stderr


def test_retention_and_cleaning_on_a_store_spare_the_pointer_and_protected_bundles(s3):
    names = [f"2026010{d}T000000Z-{d}aaaaaaaaa" for d in range(1, 6)]
    for name in names[:4]:
        s3.write(f"artifacts/{name}/manifest.json", b"{}")
        s3.write(f"artifacts/{name}/_SUCCESS", b"")
    s3.write(f"artifacts/{names[4]}/model.onnx", b"half")   # a dead run's folder: no _SUCCESS
    s3.write("artifacts/_LATEST", f"{names[1]}\n".encode())
    root = StoreRoot(s3.uri("artifacts"))
    with root.lock(False, "wait"):
        root.clean()
        assert root.prune(1, {names[0]}) == [names[2]]
    assert run_folders(s3, "artifacts") == {names[0], names[1], names[3]}

    # The bundles a store's runs were scored from, and the one a run holding the lease reads, are in use.
    from export.bundle import bundles_in_use
    s3.write("recs/20260101T000000000000Z-aaaaaaaaaa/manifest.json",
             json.dumps({"bundle": {"path": f"/cache/bundles/{names[0]}"}}).encode())
    s3.write("recs/20260101T000000000000Z-aaaaaaaaaa/_SUCCESS", b"")
    with StoreLock(Store.open(s3.uri("recs")), note={"bundle": names[3]}):
        assert bundles_in_use(s3.uri("recs")) == {names[0], names[3]}
    assert bundles_in_use(s3.uri("recs")) == {names[0]}


def test_a_refused_run_leaves_nothing_on_the_store_of_what_it_sent_early(s3, trained):
    """Each model's files are sent while the next model scores; a run the drift threshold refuses
    afterwards removes them, and the published run stays as it was."""
    first = score(s3, str(trained / "latest"), s3.uri("recs"), *FAST)
    assert first.returncode == 0, first.stderr
    before = latest_of(s3, "recs")
    refused = score(s3, str(trained / "latest"), s3.uri("recs"), "--tables", "recommendations", "--top-n", "3",
                    "--no-report", "--max-topn-change", "0")
    assert refused.returncode == 3, refused.stderr
    assert latest_of(s3, "recs") == before
    assert run_folders(s3, "recs") == {before}
