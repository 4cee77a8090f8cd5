"""Nightly runs that a broken or changed input cannot poison. With a bundle and a run published,
each broken training or test file, shrunken data set, changed id type or rating scale, and each
run that cannot be compared with the one before, ends with one error line and the exit status a
scheduler acts on, and leaves ``latest`` (link and ``_LATEST``) and every published file as they
were. Everything goes through the real CLIs; every JSON file is parsed strictly (no NaN)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import QUICK_ARGS, run_cli
from contract import retention, strict_json
from contract.publish import POINTER_FILE
from scoring.bundle import load_bundle

pytestmark = pytest.mark.slow

UNDERTRAINED = ("--force", "--max-epochs", "1", "--seed", "3")


def state(root: Path) -> dict[str, bytes]:
    """Where ``latest`` and ``_LATEST`` point, and every file of every published directory."""
    files = {"<link>": os.readlink(root / "latest").encode(), "<pointer>": (root / POINTER_FILE).read_bytes()}
    for folder in retention.published(root):
        files.update({str(p.relative_to(root)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()})
    return files


def assert_kept(root: Path, before: dict[str, bytes], new_folders: int = 0) -> None:
    """``latest`` and every file published before are unchanged; ``new_folders`` were added beside."""
    now = state(root)
    assert {k: now.get(k) for k in before} == before
    assert len(retention.published(root)) == len([k for k in before if k.endswith("_SUCCESS")]) + new_folders
    assert not list(root.glob(".staging-*"))


def one_error(result) -> str:
    """The run's single error line; no traceback anywhere."""
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr
    return line


@pytest.fixture()
def roots(trained, scored, tmp_path):
    """Copies of the published artifacts and output roots: (artifacts, output, their states)."""
    artifacts, output = tmp_path / "artifacts", tmp_path / "output"
    shutil.copytree(trained, artifacts, symlinks=True)
    shutil.copytree(scored, output, symlinks=True)
    return artifacts, output, state(artifacts), state(output)


def export(artifacts: Path, output: Path, *args: str):
    return run_cli("export", "--artifacts", str(artifacts), "--output-root", str(output), *args)


def score(artifacts: Path, output: Path, *args: str):
    return run_cli("scoring", "--bundle", str(artifacts / "latest"), "--output-root", str(output), "--top-n", "5",
                   *args)


def lines(synthetic_dir: Path) -> list[str]:
    return (synthetic_dir / "u.data").read_text().splitlines()


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(row + "\n" for row in rows))
    return path


# -- training files ------------------------------------------------------------------------------

def broken_training_file(case: str, rows: list[str]) -> list[str]:
    if case == "one_row":
        return ["1\t1\t3"]
    if case == "two_rows_rated_6_and_3":
        return ["1\t1\t6", "2\t2\t3"]
    if case == "a_rating_of_0":
        return rows + ["999\t1\t0\t881250949"]
    if case == "text_user_ids":
        return ["u" + row for row in rows]
    return [row + "\t0" for row in rows]   # five fields


BROKEN = {
    "one_row": (3, ["ratings against 3,000", "users against 100", "--accept-data-change"]),
    "two_rows_rated_6_and_3": (3, ["the rating scale is 1-6 where it was 1-5", "--accept-data-change"]),
    "a_rating_of_0": (3, ["the rating scale is 0-5 where it was 1-5", "--accept-data-change"]),
    "text_user_ids": (3, ["user ids are text where they were integer", "--accept-data-change"]),
    "five_fields": (1, ["line 1: 5 fields in a file without a header", "--columns user=0,item=1"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_training_file_never_becomes_latest(case, roots, synthetic_dir, tmp_path):
    artifacts, output, before, _ = roots
    rows = lines(synthetic_dir)
    bad = write(tmp_path / "train.data", broken_training_file(case, rows))
    good = write(tmp_path / "test.data", rows[-500:])
    result = export(artifacts, output, "--train-file", str(bad), "--test-file", str(good), *QUICK_ARGS)
    code, messages = BROKEN[case]
    assert result.returncode == code, result.stderr
    error = one_error(result)
    assert str(bad) in error and all(m in error for m in messages), error
    assert_kept(artifacts, before)   # refused before training: no bundle kept either


def test_a_test_file_with_no_known_user_is_refused_and_an_error_on_a_first_run(roots, synthetic_dir, tmp_path):
    artifacts, output, before, _ = roots
    rows = lines(synthetic_dir)
    train = write(tmp_path / "train.data", rows[:2500])
    strangers = write(tmp_path / "test.data", [f"{int(r.split()[0]) + 10_000}\t{r.split(None, 1)[1]}"
                                               for r in rows[2500:]])
    args = ("--train-file", str(train), "--test-file", str(strangers), *QUICK_ARGS)
    refused = export(artifacts, output, *args)
    assert refused.returncode == 3, refused.stderr
    error = one_error(refused)
    assert str(strangers) in error and "none of its 500 ratings has a user and item in the training data" in error
    assert "--accept-worse" in error
    assert_kept(artifacts, before)
    first = export(tmp_path / "fresh", output, *args)
    assert first.returncode == 1, first.stderr
    assert str(strangers) in one_error(first) and not (tmp_path / "fresh" / "latest").exists()


def test_a_60_percent_shrink_is_refused_a_40_percent_one_accepted_and_the_override_works(roots, synthetic_dir,
                                                                                        tmp_path):
    artifacts, output, before, _ = roots
    rows = lines(synthetic_dir)
    quick = ("--models", "mf", "--max-epochs", "2", "--accept-worse")   # the gate is tested elsewhere
    shrunk = write(tmp_path / "shrunk.data", rows[:1200])
    refused = export(artifacts, output, "--ratings", str(shrunk), *quick)
    assert refused.returncode == 3, refused.stderr
    error = one_error(refused)
    assert str(shrunk) in error and "1,200 ratings against 3,000 (shrank 60%" in error and "--max-data-shrink" in error
    assert_kept(artifacts, before)

    smaller = write(tmp_path / "smaller.data", rows[:1800])
    accepted = export(artifacts, output, "--ratings", str(smaller), *quick)
    assert accepted.returncode == 0, accepted.stderr
    checks = strict_json.loads(((artifacts / "latest") / "manifest.json").read_text())["data_checks"]
    assert checks["passed"] and checks["profile"]["ratings"] == 1800 and checks["previous_profile"]["ratings"] == 3000

    tiny = write(tmp_path / "tiny.data", rows[:300])   # 83% fewer than the 1,800 now latest
    override = export(artifacts, output, "--ratings", str(tiny), *quick, "--accept-data-change")
    assert override.returncode == 0, override.stderr
    checks = strict_json.loads(((artifacts / "latest") / "manifest.json").read_text())["data_checks"]
    assert not checks["passed"] and checks["accept_change"] and "shrank 83%" in checks["problems"][0]


def test_a_truncated_night_is_refused_and_the_next_full_night_publishes(roots, synthetic_dir, tmp_path):
    artifacts, output, before, _ = roots
    truncated = write(tmp_path / "tonight.data", lines(synthetic_dir)[:10])
    night = export(artifacts, output, "--ratings", str(truncated), *QUICK_ARGS)
    assert night.returncode == 3, night.stderr
    assert str(truncated) in one_error(night) and "10 ratings against 3,000" in night.stderr
    assert_kept(artifacts, before)
    # The next night's full export: trained again, judged by the gate, published.
    next_night = export(artifacts, output, "--data-dir", str(synthetic_dir), *QUICK_ARGS, "--force")
    assert next_night.returncode == 0, next_night.stderr
    latest = (artifacts / "latest").resolve()
    assert latest.name.encode() != before["<link>"].split(b"/")[-1]
    manifest = strict_json.loads((latest / "manifest.json").read_text())
    assert manifest["gate"]["passed"] and manifest["data_checks"]["passed"]
    assert (artifacts / POINTER_FILE).read_text().strip() == latest.name


def test_models_that_cannot_be_compared_are_kept_beside_unless_the_change_is_accepted(roots, synthetic_dir, tmp_path):
    artifacts, output, before, _ = roots
    # Another catalogue of the same size and types: no held-out pair both bundles know.
    other = write(tmp_path / "other.data", [f"{int(u) + 1000}\t{int(i) + 1000}\t{r}\t{t}"
                                            for u, i, r, t in (row.split("\t") for row in lines(synthetic_dir))])
    args = ("--ratings", str(other), "--models", "mf", "--max-epochs", "3")
    refused = export(artifacts, output, *args)
    assert refused.returncode == 3, refused.stderr
    error = one_error(refused)
    assert str(other) in error and "held-out ratings can be compared" in error and "no evidence" in error
    assert_kept(artifacts, before, new_folders=1)
    kept = max(retention.published(artifacts))
    gate = strict_json.loads((kept / "manifest.json").read_text())["gate"]
    assert not gate["passed"] and gate["models"]["mf"]["compared"] is False and gate["models"]["mf"]["pairs"] == 0
    accepted = export(artifacts, output, *args, "--accept-data-change")
    assert accepted.returncode == 0, accepted.stderr
    gate = strict_json.loads(((artifacts / "latest") / "manifest.json").read_text())["gate"]
    assert gate["passed"] and gate["models"]["mf"]["compared"] is False


# -- the model gate and retention ---------------------------------------------------------------

def test_retention_never_removes_latest_when_a_refused_bundle_is_newer(roots, synthetic_dir, tmp_path):
    artifacts, _, before, _ = roots
    no_runs = tmp_path / "no-runs"   # no scoring run protects the bundle: only its being latest does
    refused = export(artifacts, no_runs, "--data-dir", str(synthetic_dir), *UNDERTRAINED, "--keep", "1")
    assert refused.returncode == 3, refused.stderr
    assert_kept(artifacts, before, new_folders=1)   # the older latest survives --keep 1


def test_the_gate_follows_max_regression(roots, synthetic_dir):
    artifacts, output, before, _ = roots
    lenient = export(artifacts, output, "--data-dir", str(synthetic_dir), *UNDERTRAINED, "--max-regression", "1000")
    assert lenient.returncode == 0, lenient.stderr
    gate = strict_json.loads(((artifacts / "latest") / "manifest.json").read_text())["gate"]
    assert gate["passed"] and gate["max_regression"] == 1000
    assert any(f["rmse"] > f["previous_rmse"] * 1.01 or f["ndcg_at_10"] < f["previous_ndcg_at_10"] * 0.99
               for f in gate["models"].values())   # worse than the default limit allows


# -- run-to-run drift ----------------------------------------------------------------------------

def rewrite_previous(output: Path, change) -> None:
    """Rewrite every file of the published run's user tables with ``change(table) -> table``."""
    for table in ("predictions", "recommendations"):
        for path in ((output / "latest").resolve() / table).rglob("*.parquet"):
            pq.write_table(change(pq.read_table(path)), path)


def drop_rows(column: str, value: int):
    return lambda table: table.filter(pc.not_equal(table.column(column), value))


def shift_users(table: pa.Table) -> pa.Table:
    return table.set_column(table.schema.get_field_index("user_id"), "user_id",
                            pc.add(table.column("user_id"), pa.scalar(10_000, pa.int32())))


def ids_as_text(table: pa.Table) -> pa.Table:
    for key in ("user_id", "item_id"):
        table = table.set_column(table.schema.get_field_index(key), key, pc.cast(table.column(key), pa.string()))
    return table


def drift_of(output: Path) -> dict:
    run = (output / "latest").resolve()
    strict_json.loads((run / "report.json").read_text())
    return strict_json.loads((run / "manifest.json").read_text())["drift"]


def test_drift_with_a_new_item_compares_the_pairs_both_runs_hold(roots):
    artifacts, output, *_ = roots
    rewrite_previous(output, drop_rows("item_id", 1))
    result = score(artifacts, output, "--max-prediction-change", "0.001")
    assert result.returncode == 0, result.stderr
    for figures in drift_of(output)["models"].values():
        assert figures["comparable"] and figures["pairs_compared"] == 100 * 59
        assert figures["prediction_mean_abs_change"] == 0.0 and figures["prediction_max_abs_change"] == 0.0
    assert "nan" not in result.stderr


def test_drift_with_a_new_user_compares_the_users_both_runs_hold(roots):
    artifacts, output, *_ = roots
    rewrite_previous(output, drop_rows("user_id", 1))
    result = score(artifacts, output, "--max-topn-change", "0")
    assert result.returncode == 0, result.stderr
    for figures in drift_of(output)["models"].values():
        assert figures["users_compared"] == 99 and figures["topn_changed_share"] == 0.0
        assert figures["users_comparable_share"] == pytest.approx(0.99)
    assert "top-N changed for 0.00% of users" in result.stderr


@pytest.mark.parametrize("change, option, why", [
    (shift_users, "--max-topn-change", "of the new run's users, items or pairs are in the previous run"),
    (ids_as_text, "--max-prediction-change", "user ids are integer where the previous run's were text"),
])
def test_runs_that_cannot_be_compared_are_refused_by_a_threshold_not_passed(change, option, why, roots):
    artifacts, output, _, before = roots
    rewrite_previous(output, change)
    before = state(output)
    refused = score(artifacts, output, option, "0.5")
    assert refused.returncode == 3, refused.stderr
    error = one_error(refused)
    assert option in error and why in error and "cannot be told" in error
    assert_kept(output, before)
    published = score(artifacts, output)   # no threshold: published, the drift says why it is empty
    assert published.returncode == 0, published.stderr
    assert "Traceback" not in published.stderr and "not comparable" in published.stderr
    for figures in drift_of(output)["models"].values():
        assert figures["comparable"] is False and why in figures["why"]
        assert figures.get("topn_changed_share") is None and figures.get("prediction_mean_abs_change") is None


def test_strict_json_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        strict_json.loads('{"x": NaN}')
    assert strict_json.dumps({"x": float("nan"), "y": [float("inf"), 1.5]}) == '{"x": null, "y": [null, 1.5]}'


# -- top-N on a small catalogue ------------------------------------------------------------------

def test_a_top_n_larger_than_the_catalogue_gives_shorter_lists(trained, tmp_path):
    result = run_cli("scoring", "--bundle", str(trained / "latest"), "--output-root", str(tmp_path), "--top-n",
                     "1000", "--no-report")
    assert result.returncode == 0, result.stderr
    lists = pq.read_table(tmp_path / "latest" / "recommendations" / "model=mf").to_pandas()
    bundle = load_bundle(trained / "latest")
    unseen = dict(zip(bundle.user_ids.tolist(), (bundle.n_items - np.diff(bundle.seen_indptr)).tolist()))
    assert lists.groupby("user_id")["rank"].max().to_dict() == unseen   # every unseen item of the 60, ranked
    verify = run_cli("evaluation.verify", "--run", str(tmp_path / "latest"))
    assert verify.returncode == 0, verify.stderr
