"""The HTML report: written into every run, self-contained, every figure referenced, every number
taken from the run's report.json."""
from __future__ import annotations

import json
import re
import shutil

from conftest import run_cli
from scoring.report import REPORT_HTML, REPORT_JSON, fmt

FIGURES = ("learning_curves", "predicted_vs_true")


def numbers_in(value, out: set[str]) -> set[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            numbers_in(k, out)
            numbers_in(v, out)
    elif isinstance(value, list):
        for v in value:
            numbers_in(v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.add(fmt(value))
    elif isinstance(value, str):  # ids used as keys, years inside titles
        out.update(re.findall(r"\d+", value))
    return out


def test_report_is_written_self_contained_and_references_every_figure(scored):
    page = (scored / "latest" / REPORT_HTML).read_text()
    for name in FIGURES:
        assert f"id='fig-{name}'" in page
        assert re.search(rf"id='fig-{name}' alt='[^']+' src='data:image/png;base64,[A-Za-z0-9+/=]{{200,}}'", page)
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    assert "<h2>Top 5 by mf</h2>" in page and "Movie " in page  # titles of the examples


def test_every_number_on_the_page_comes_from_the_json(scored):
    data = json.loads((scored / "latest" / REPORT_JSON).read_text())
    page = (scored / "latest" / REPORT_HTML).read_text()
    text = re.sub(r"<style>.*?</style>", "", re.sub(r"src='data:[^']*'", "", page))
    text = text.replace(data["run_id"], "").replace(data["bundle_id"], "")
    text = re.sub(r"<[^>]+>", " ", text)
    allowed = numbers_in(data, set())
    scale = data["rating_scale"]
    words = {"[0, 1]", f"Ratings from {scale['low']:g} to {scale['high']:g}"}
    for word in words:
        text = text.replace(word, "")
    found = re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", text)
    assert found, "the page shows no numbers at all"
    strays = sorted({n for n in found if n not in allowed} - {"10", "4"})  # "top-10", "rated >= 4" labels
    assert strays == []


def test_report_without_matplotlib_keeps_its_tables(scored, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scored / "latest", run)
    (run / REPORT_HTML).unlink()
    code = ("import sys; sys.modules['matplotlib'] = None; from pathlib import Path; "
            "from scoring.report import write_report; write_report(Path(sys.argv[1]), None)")
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True,
                            env={"PYTHONPATH": str(scored.parents[0])} | __import__("os").environ.copy())
    assert result.returncode == 0, result.stderr
    page = (run / REPORT_HTML).read_text()
    assert "matplotlib is not installed" in page and "<table>" in page and "data:image" not in page


def evaluation_results(path):
    """A small ``make evaluate`` result: one protocol, two methods, figures that appear nowhere else."""
    ranking = {"precision": 0.1234, "recall": 0.2345, "ndcg": 0.3456, "map": 0.0456, "hit_rate": 0.5678,
               "coverage": 0.0678, "mean_popularity": 123.5, "users": 7}
    body = {"splits": [{}, {}], "mean_rating": {"mf": {"rmse_stars": 0.9123, "mae_stars": 0.7123, "rmse_unit": 0.2281},
                                               "surprise_SVDpp": {"rmse_stars": 0.9234, "mae_stars": 0.7234,
                                                                  "rmse_unit": 0.2309}},
            "mean_ranking": {"mf": {"rated_4_plus": ranking}, "most_popular": {"rated_4_plus": ranking}}}
    path.write_text(json.dumps({"protocols": {"cross_validation": body}}))
    return path


def test_report_command_rewrites_the_page_with_the_evaluation(scored, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scored / "latest", run)
    (run / REPORT_HTML).unlink()
    result = run_cli("scoring.report", "--run", str(run), "--evaluation", str(evaluation_results(tmp_path / "e.json")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run.resolve() / REPORT_HTML)
    page = (run / REPORT_HTML).read_text()
    data = json.loads((run / REPORT_JSON).read_text())
    assert data["evaluation"]["cross_validation"]["splits"] == 2
    assert "cross validation: mean over 2 split(s)" in page
    for figure in ("0.9123", "0.9234", "surprise_SVDpp", "0.3456", "123.5000"):
        assert figure in page, figure
    assert "id='fig-ranking'" in page   # the NDCG plot appears with evaluation results
    assert "No cross-validation results yet" not in page
