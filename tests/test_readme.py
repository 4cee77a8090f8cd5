"""The README is the user's first page: every command, target and option it names exists, its
reading examples run against a real published run, and it stays short."""
from __future__ import annotations

import re
import subprocess

import duckdb
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, run_cli
from export.models import registry

README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_the_readme_stays_a_first_page():
    assert len(README.encode()) <= 12_000


@pytest.mark.parametrize("module", sorted(set(re.findall(r"`python -m ([\w.]+)", README))))
def test_every_command_and_each_of_its_options_exists(module):
    result = run_cli(module, "--help")
    assert result.returncode == 0, result.stderr
    paragraph = re.search(rf"Options of `python -m {re.escape(module)}`:(.*?)\n\n", README, flags=re.S)
    for option in re.findall(r"`(--[\w-]+)", paragraph.group(1)) if paragraph else []:
        assert option in result.stdout, f"{module} {option}"


def test_every_option_the_readme_gives_the_scoring_command_exists():
    result = run_cli("scoring", "--help")
    paragraph = re.search(r"Options of `recjob-score`:(.*?)\n\n", README, flags=re.S).group(1)
    options = re.findall(r"`(--[\w-]+[a-z])", paragraph)
    assert "--similar-k" in options and "--exclude-items" in options
    for option in options:
        assert option in result.stdout, option


def test_every_make_target_exists():
    targets = set(re.findall(r"`make ([\w-]+)", README))
    listed = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    for target in targets:
        assert re.search(rf"make {re.escape(target)}\b", listed), target


def test_the_pandas_example_reads_a_published_run(scored):
    example = code_blocks("python")[0]
    namespace: dict = {}
    exec(example.replace("output/latest", str(scored / "latest")), namespace)
    assert set(namespace["preds"]["model"].unique()) == set(registry.names())
    assert len(namespace["recs"]) > 0 and set(namespace["recs"]["model"].unique()) == {"mf"}


def test_the_object_store_example_follows_latest_in_a_bucket(scored, s3):
    """The README's S3 reader, run against a bucket holding the published run under _LATEST."""
    example = code_blocks("python")[1]
    run = (scored / "latest").resolve()
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        s3.write(f"recs/{run.name}/{path.relative_to(run).as_posix()}", path.read_bytes())
    s3.write("recs/_LATEST", f"{run.name}\n".encode())
    namespace: dict = {}
    exec(example.replace("s3://lake/recs", s3.uri("recs")), namespace)
    assert namespace["run"] == run.name
    assert len(namespace["frame"]) == pq.read_table(run / "recommendations").num_rows > 0
    comment = re.search(r"# or (duckdb\.sql\(.*\))", example).group(1)
    top = eval(comment, namespace).fetchall()
    assert len(top) == len(namespace["frame"].query("rank <= 3")) > 0


def test_the_duckdb_example_reads_a_published_run(scored):
    (example,) = code_blocks("sql")
    query = example.replace("output/latest", str(scored / "latest")).replace("-- duckdb\n", "")
    user = int(re.search(r"user_id = (\d+)", query).group(1))
    as_written = duckdb.sql(query)   # the synthetic run has no user 196: the columns as selected, no row
    assert as_written.columns == ["model", "user_id", "rank", "item_id", "prediction"]
    assert as_written.fetchall() == []
    rows = duckdb.sql(query.replace(f"user_id = {user}", "user_id = 1")).fetchall()
    assert {r[0] for r in rows} == set(registry.names())
    assert [r[2] for r in rows if r[0] == "mf"] == list(range(1, 6))
