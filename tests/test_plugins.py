"""A family and a table from an installed package: found through the ``recjob.families`` and
``recjob.tables`` entry-point groups by ``python -m export`` (the family's own option in
``--help`` and applied), ``python -m scoring`` and ``python -m evaluation.verify``, with no edit to
the project. The package is built from tests/bias_family.py and tests/extra_table.py and
installed by pip into a folder of its own, put on the commands' path."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "recjob-bias-plugin"
version = "0.1.0"

[project.entry-points."recjob.families"]
bias = "bias_plugin:FAMILY"

[project.entry-points."recjob.tables"]
user_means = "user_means_plugin:TABLE"

[tool.setuptools]
py-modules = ["bias_plugin", "user_means_plugin"]
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> str:
    """PYTHONPATH with the project and the installed plugin package."""
    package = tmp_path_factory.mktemp("package")
    shutil.copy(Path(__file__).parent / "bias_family.py", package / "bias_plugin.py")
    shutil.copy(Path(__file__).parent / "extra_table.py", package / "user_means_plugin.py")
    (package / "pyproject.toml").write_text(PYPROJECT)
    site = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                           "--no-build-isolation", "--target", str(site), str(package)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(site.glob("recjob_bias_plugin-*.dist-info/entry_points.txt"))
    return f"{ROOT}{os.pathsep}{site}"


def test_an_installed_family_is_listed_with_its_option(plugin_path):
    result = run_cli("export", "--help", env={"PYTHONPATH": plugin_path})
    assert result.returncode == 0, result.stderr
    assert "--bias-rank-dim" in result.stdout and "[bias]" in result.stdout
    assert "mf,dense,lstm,item_ae,bias" in result.stdout.replace("\n", "").replace(" ", "")
    # without the package the option does not exist
    assert "--bias-rank-dim" not in run_cli("export", "--help").stdout


def test_an_installed_family_trains_exports_and_scores_through_the_clis(plugin_path, synthetic_dir, tmp_path):
    env = {"PYTHONPATH": plugin_path}
    trained = run_cli("export", "--data-dir", str(synthetic_dir), "--models", "mf,bias", "--bias-rank-dim", "3",
                      "--max-epochs", "3", "--artifacts", str(tmp_path / "artifacts"),
                      "--output-root", str(tmp_path / "output"), env=env)
    assert trained.returncode == 0, trained.stderr
    manifest = json.loads((tmp_path / "artifacts" / "latest" / "manifest.json").read_text())
    assert manifest["model_names"] == ["mf", "bias"]
    assert manifest["config"]["model_configs"]["bias"]["rank_dim"] == 3
    scored = run_cli("scoring", "--bundle", str(tmp_path / "artifacts" / "latest"), "--output-root",
                     str(tmp_path / "output"), "--models", "bias", "--tables", "recommendations,user_means",
                     "--no-report", env=env)
    assert scored.returncode == 0, scored.stderr
    run = json.loads((tmp_path / "output" / "latest" / "manifest.json").read_text())
    assert run["models"] == ["bias"] and run["row_counts"]["recommendations"]["bias"] > 0
    assert run["row_counts"]["user_means"]["bias"] == run["n_users"]
    verified = run_cli("evaluation.verify", "--run", str(tmp_path / "output" / "latest"), env=env)
    assert verified.returncode == 0, verified.stderr
    assert "user_means_max_abs_diff" in verified.stdout


def test_an_installed_table_is_listed_by_the_scoring_command(plugin_path):
    result = run_cli("scoring", "--help", env={"PYTHONPATH": plugin_path})
    assert result.returncode == 0, result.stderr
    assert "predictions,recommendations,similar_items,user_means" in result.stdout.replace("\n", "").replace(" ", "")
    assert "user_means" not in run_cli("scoring", "--help").stdout


def test_a_broken_entry_point_is_one_line_naming_it(tmp_path):
    site = tmp_path / "site"
    info = site / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[recjob.families]\nbroken = no_such_module:FAMILY\n")
    result = run_cli("export", "--help", env={"PYTHONPATH": f"{ROOT}{os.pathsep}{site}"})
    assert result.returncode == 2
    assert "entry point broken = 'no_such_module:FAMILY' (recjob.families): could not be loaded" in result.stderr
    (info / "entry_points.txt").write_text("[recjob.tables]\nbroken = no_such_module:TABLE\n")
    result = run_cli("scoring", "--help", env={"PYTHONPATH": f"{ROOT}{os.pathsep}{site}"})
    assert result.returncode == 2
    assert "entry point broken = 'no_such_module:TABLE' (recjob.tables): could not be loaded" in result.stderr
