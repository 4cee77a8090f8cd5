"""``--engine spark``: the same bundle gives the same tables as the local engine, a task whose
Python worker dies is retried without duplicating or losing rows, and a failed job publishes
nothing. Each run goes through the real CLI (its own Spark driver), on ``local[2]``, and once on
``local-cluster`` (two executor JVMs with their own Python workers, as on a cluster)."""
from __future__ import annotations

import json
import shutil
import subprocess

import pyarrow.dataset as ds
import pytest

from conftest import SIMILAR_K, TABLES, run_cli
from contract.failpoints import ENVIRONMENT_VARIABLE
from scoring.spark_engine import TASK_FAILPOINT, TASK_FAILPOINT_ALWAYS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def java():
    """The Spark tests need Java: without it the suite fails with one line saying so (never skips)."""
    if shutil.which("java") is None or subprocess.run(["java", "-version"], capture_output=True).returncode:
        pytest.fail("Java 17 or 21 is needed for the Spark tests (pyspark 4); install OpenJDK 17", pytrace=False)


def spark_run(trained, output, master="local[2]", env=None, *extra):
    return run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", str(output), "--top-n", "5",
                   "--tables", ",".join(TABLES), "--similar-k", str(SIMILAR_K),
                   "--engine", "spark", "--spark-master", master, "--no-report", *extra, env=env)


def tables(run):
    out = {}
    for name, keys in (("predictions", ["model", "user_id", "item_id"]), ("recommendations", ["model", "user_id", "rank"]),
                       ("similar_items", ["model", "item_id", "rank"])):
        frame = ds.dataset(run / name, partitioning="hive").to_table().to_pandas()
        frame["model"] = frame["model"].astype(str)
        out[name] = frame.sort_values(keys).reset_index(drop=True)
    return out


def assert_same_tables(ours, theirs):
    for name in ours:
        a, b = ours[name], theirs[name]
        assert len(a) == len(b) and list(a.columns) == list(b.columns), name
        for column in a.columns:
            if column in ("prediction", "similarity"):
                assert (a[column] - b[column]).abs().max() <= 1e-6, name
            else:
                assert (a[column] == b[column]).all(), (name, column)


@pytest.fixture(scope="module")
def local_tables(scored):
    return tables(scored / "latest")


def test_spark_tables_equal_the_local_engines(trained, scored, local_tables, tmp_path):
    result = spark_run(trained, tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "latest"
    assert_same_tables(tables(run), local_tables)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["engine"] == "spark" and (run / "_SUCCESS").is_file()
    local_manifest = json.loads((scored / "latest" / "manifest.json").read_text())
    for model, parity in manifest["parity"].items():   # every reference pair checked in some task
        assert parity["pairs"] == local_manifest["parity"][model]["pairs"] > 0
        assert parity["max_abs_diff"] <= parity["tolerance"]
    assert all(p.name.startswith("part-") for p in run.rglob("*.parquet"))
    assert not list(run.rglob("*.crc")) and [p for p in run.rglob("_SUCCESS")] == [run / "_SUCCESS"]
    assert "Traceback" not in result.stderr


def test_spark_equals_local_with_rules_on(trained, tmp_path):
    exclude, candidates = tmp_path / "exclude.csv", tmp_path / "candidates.csv"
    exclude.write_text("item_id\n1\n2\n3\n999999\n")
    candidates.write_text("item_id\n" + "\n".join(str(i) for i in range(1, 40)) + "\n")
    rules = ("--exclude-items", str(exclude), "--candidates", str(candidates))
    local = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", str(tmp_path / "local"),
                    "--top-n", "5", "--tables", ",".join(TABLES), "--similar-k", str(SIMILAR_K), "--no-report", *rules)
    assert local.returncode == 0, local.stderr
    spark = spark_run(trained, tmp_path / "spark", "local[2]", None, *rules)
    assert spark.returncode == 0, spark.stderr
    ours, theirs = tables(tmp_path / "spark" / "latest"), tables(tmp_path / "local" / "latest")
    assert_same_tables(ours, theirs)
    for name in ("recommendations", "similar_items"):
        listed = ours[name]["similar_item_id" if name == "similar_items" else "item_id"]
        assert len(listed) and listed.between(4, 39).all(), name
    manifest = json.loads((tmp_path / "spark" / "latest" / "manifest.json").read_text())
    assert manifest["rules"]["exclude_items"]["not_in_catalogue"] == 1


def test_a_killed_python_worker_is_retried_and_loses_or_duplicates_no_row(trained, local_tables, tmp_path):
    # local[2,2]: two cores, each task tried up to twice; the first task's first attempt dies after
    # writing its part files, which the retry writes again under other names: kept, they would
    # duplicate rows (and fail the row counts).
    result = spark_run(trained, tmp_path, "local[2,2]", {ENVIRONMENT_VARIABLE: TASK_FAILPOINT})
    assert result.returncode == 0, result.stderr
    assert_same_tables(tables(tmp_path / "latest"), local_tables)
    spark = json.loads((tmp_path / "latest" / "manifest.json").read_text())["spark"]
    assert spark["failed_task_attempts"] == 1 and spark["retried_tasks"] == [0] and spark["lost_executors"] == 0
    assert "1 task attempt(s) failed and were retried (tasks [0])" in result.stderr


def test_a_job_that_fails_every_attempt_ends_with_one_line_and_publishes_nothing(trained, scored, tmp_path):
    shutil.copytree(scored, tmp_path / "out", symlinks=True)
    before = (tmp_path / "out" / "latest").resolve()
    result = spark_run(trained, tmp_path / "out", "local[2,2]", {ENVIRONMENT_VARIABLE: TASK_FAILPOINT_ALWAYS})
    assert result.returncode == 1
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error == "error: spark: task 0 failed 2 times: Python worker exited unexpectedly (crashed)."
    assert "Traceback" not in result.stderr and "Py4JJavaError" not in result.stderr
    assert not [line for line in result.stderr.splitlines() if line.lstrip().startswith("at org.apache")]
    assert (tmp_path / "out" / "latest").resolve() == before
    assert not list((tmp_path / "out").glob(".staging-*"))


def test_on_a_local_cluster_with_two_executor_jvms_and_a_shipped_bundle(trained, local_tables, tmp_path):
    result = spark_run(trained, tmp_path, "local-cluster[2,1,1024]", None, "--spark-ship-bundle")
    assert result.returncode == 0, result.stderr
    assert_same_tables(tables(tmp_path / "latest"), local_tables)


def test_sparks_own_parquet_writer_gives_the_same_tables(trained, local_tables, tmp_path):
    result = spark_run(trained, tmp_path, "local[2]", None, "--spark-writer", "spark")
    assert result.returncode == 0, result.stderr
    assert_same_tables(tables(tmp_path / "latest"), local_tables)
    assert not list((tmp_path / "latest").rglob("*.crc"))
