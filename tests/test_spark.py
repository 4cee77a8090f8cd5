"""``--engine spark``: the same bundle gives the same tables as the local engine, a task whose
Python worker dies is retried without duplicating or losing rows, and a failed job publishes
nothing. Each run goes through the real CLI (its own Spark driver), on ``local[2]``, and once on
``local-cluster`` (two executor JVMs with their own Python workers, as on a cluster)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from conftest import SIMILAR_K, TABLES, run_cli
from contract.failpoints import ENVIRONMENT_VARIABLE
from contract.store import mirror
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


def test_spark_on_a_bucket_executors_fetch_the_bundle_and_send_their_parts_there(trained, local_tables, s3,
                                                                                  tmp_path):
    """The first task's worker dies after sending its part files: the driver keeps the accepted
    attempt's files only, and the published tables equal the local engine's."""
    s3.put_bundle((trained / "latest").resolve())
    result = run_cli("scoring", "--bundle", s3.uri("artifacts"), "--output-root", s3.uri("recs"), "--top-n", "5",
                     "--tables", ",".join(TABLES), "--similar-k", str(SIMILAR_K), "--engine", "spark",
                     "--spark-master", "local[2,2]", "--no-report", env={**s3.env, ENVIRONMENT_VARIABLE: TASK_FAILPOINT})
    assert result.returncode == 0, result.stderr
    run_id = s3.read("recs/_LATEST").decode().strip()
    manifest = json.loads(s3.read(f"recs/{run_id}/manifest.json"))
    assert manifest["engine"] == "spark" and manifest["spark"]["failed_task_attempts"] >= 1
    parts = [k.split("/", 2)[2] for k in s3.keys(f"recs/{run_id}/") if k.endswith(".parquet") and "/rules/" not in k]
    assert sorted(parts) == sorted(manifest["files"])   # no file of a failed attempt is left
    assert_same_tables(tables(mirror(s3.uri("recs", run_id))), local_tables)


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spark_env() -> dict[str, str]:
    """What Spark's scripts need here: the pip package's folder as SPARK_HOME (they look for it
    with the ``python`` on PATH otherwise), and the loopback address."""
    import pyspark
    return {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_LOCAL_IP": "127.0.0.1"}


@pytest.fixture
def standalone_cluster(tmp_path):
    """A Spark standalone master and one worker (2 cores) on 127.0.0.1, as ``spark-class`` starts
    them (the pip package of pyspark has no sbin/start-*.sh); its master URL."""
    spark_class = Path(sys.executable).parent / "spark-class"
    env = {**spark_env(), "SPARK_LOG_DIR": str(tmp_path), "SPARK_WORKER_DIR": str(tmp_path / "work")}
    port = _free_port()
    master = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(_free_port())], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"spark://127.0.0.1:{port}"
    worker = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.worker.Worker", url, "--cores", "2",
                               "--memory", "2g", "--webui-port", str(_free_port())], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield url
    finally:
        for process in (worker, master):
            process.terminate()
            process.wait(30)


def test_spark_submit_to_a_standalone_cluster_scores_with_the_spark_engine(trained, local_tables, tmp_path,
                                                                          standalone_cluster):
    """The launcher the package ships, given to spark-submit with no --engine: Spark's engine runs."""
    launcher = run_cli("scoring.spark_submit")
    assert launcher.returncode == 0 and launcher.stdout.strip().endswith("scoring/spark_submit.py")
    env = {**spark_env(), "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    submitted = subprocess.run(
        [str(Path(sys.executable).parent / "spark-submit"), "--master", standalone_cluster,
         "--conf", "spark.executor.memory=1g", launcher.stdout.strip(),
         "--bundle", str(trained / "latest"), "--output-root", str(tmp_path / "out"), "--top-n", "5",
         "--tables", ",".join(TABLES), "--similar-k", str(SIMILAR_K), "--no-report"],
        env=env, capture_output=True, text=True, timeout=600)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    run = tmp_path / "out" / "latest"
    assert json.loads((run / "manifest.json").read_text())["engine"] == "spark"
    assert_same_tables(tables(run), local_tables)
