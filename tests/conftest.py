"""Shared fixtures: a small structured synthetic data set, and one trained bundle and run per session."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from contract.machine import available_cpus


def share_the_cpus_between_test_workers() -> None:
    """Under pytest-xdist (``make test`` runs two workers) each worker, and every command it
    starts, keeps to its share of the CPUs: torch's and the BLAS libraries' thread pools size
    themselves from these variables when they start, and pools the size of the machine in every
    worker spin against each other. Results depend on thread counts only in the last float digits."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = str(max(1, available_cpus() // int(workers)))
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(variable, threads)


share_the_cpus_between_test_workers()

from export.data.synthetic import generate_ratings, write_u_data  # noqa: E402  (after the thread counts)

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC_SHAPE = (100, 60, 3_000)
SYNTHETIC_SEED = 7
QUICK_ARGS = ("--max-epochs", "25", "--batch-size", "128", "--seed", "3")
TABLES = ("predictions", "recommendations", "similar_items")
"""What the ``scored`` run writes: every built-in table."""
SIMILAR_K = 4


def run_cli(module: str, *args: str, cwd: Path | None = None, env: dict | None = None,
            block_torch: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would; with ``block_torch`` torch cannot be imported."""
    if block_torch:
        code = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = [%r] + sys.argv[1:]; "
                "runpy.run_module(%r, run_name='__main__', alter_sys=True)" % (module, module))
        command = [sys.executable, "-c", code, *args]
    else:
        command = [sys.executable, "-m", module, *args]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """An ml-100k-like folder with a deterministic synthetic ``u.data`` (100 users x 60 items)."""
    folder = tmp_path_factory.mktemp("synthetic")
    write_u_data(generate_ratings(*SYNTHETIC_SHAPE, seed=SYNTHETIC_SEED), folder / "u.data")
    (folder / "u.item").write_text("".join(f"{i}|Movie {i} (1990)|||\n" for i in range(1, SYNTHETIC_SHAPE[1] + 1)), encoding="latin-1")
    return folder


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synthetic_dir) -> Path:
    """Artifacts root holding one bundle trained on the synthetic data through the real CLI."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    result = run_cli("export", "--data-dir", str(synthetic_dir), "--artifacts", str(artifacts),
                     *QUICK_ARGS)
    assert result.returncode == 0, result.stderr
    return artifacts


@pytest.fixture(scope="session")
def scored(tmp_path_factory, trained) -> Path:
    """Output root holding one published scoring run of the ``trained`` bundle, every table, made
    without torch."""
    output = tmp_path_factory.mktemp("output")
    result = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", str(output),
                     "--top-n", "5", "--tables", ",".join(TABLES), "--similar-k", str(SIMILAR_K), block_torch=True)
    assert result.returncode == 0, result.stderr
    return output


SLOW_FIXTURES = {"trained", "scored"}
"""Fixtures that train the real models through the CLI: tests that use them are left out of
``make test-fast``, as are modules marked ``slow`` themselves."""


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


RUN_SPECIFIC_METADATA = {b"recjob.run_id", b"recjob.bundle_id"}
"""Footer keys that name the run and bundle: the only bytes in which equal tables of two runs differ."""


def table_contents(run: Path) -> dict:
    """Every Parquet file of a run by relative path: its rows and schema, and its footer metadata
    less the run's and bundle's ids (the model version stays: equal weights, equal version)."""
    import pyarrow.parquet as pq
    contents = {}
    for path in sorted(run.rglob("*.parquet")):
        table = pq.read_table(path)
        metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k not in RUN_SPECIFIC_METADATA}
        contents[path.relative_to(run)] = (table.replace_schema_metadata(None), metadata)
    return contents


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1, for this test process's object-store tests."""
    from benchmarks.s3_server import start_server
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """A fresh bucket; the AWS variables are set in this process (for in-process calls) and in
    ``s3.env`` (for the CLIs), with a bundle cache of the test's own."""
    import contract.store
    env = {**s3_server.env, "RECJOB_CACHE_DIR": str(tmp_path / "cache"),
           "RECJOB_STAGING_DIR": str(tmp_path / "staging")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(contract.store, "_CLIENT", None)
    from object_store import Bucket
    return Bucket(s3_server.new_bucket(), s3_server, env)
