"""The bundle fingerprint covers exactly what changes a bundle's contents: editing evaluation, the
benchmark or the scoring job keeps the bundle; editing a model, the training loop, a default or
the seed makes a new one."""
from __future__ import annotations

import shutil

import pytest

from conftest import ROOT
from export.config import RunConfig
from export.fingerprint import code_fingerprint, run_fingerprint

PACKAGES = ("contract", "export", "scoring", "evaluation", "benchmarks")


@pytest.fixture
def tree(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def edited(tree, path: str, old: str | None = None, new: str | None = None) -> str:
    """The fingerprint after an edit: ``old`` replaced by ``new``, or a comment appended."""
    file = tree / path
    text = file.read_text()
    if old is None:
        file.write_text(text + "\n# an edit\n")
    else:
        assert old in text, (path, old)
        file.write_text(text.replace(old, new, 1))
    return code_fingerprint(tree)


@pytest.mark.parametrize("path", ["evaluation/evaluate.py", "evaluation/verify.py", "benchmarks/bench.py",
                                  "scoring/runner.py", "scoring/report.py", "contract/publish.py"])
def test_edits_outside_what_defines_a_bundle_keep_it(tree, path):
    before = code_fingerprint(tree)
    assert edited(tree, path) == before


@pytest.mark.parametrize("path, old, new", [
    ("export/models/mf.py", None, None),
    ("export/training/loop.py", None, None),
    ("export/models/dense.py", "hidden: int = 128", "hidden: int = 96"),                # a default
    ("export/training/config.py", "reference_batch: int = 1024", "reference_batch: int = 512"),   # a default
    ("export/onnx/export.py", None, None),
    ("contract/bundle_format.py", None, None),
])
def test_edits_to_what_defines_a_bundle_make_a_new_one(tree, path, old, new):
    before = code_fingerprint(tree)
    assert edited(tree, path, old, new) != before


def test_settings_and_seed_are_part_of_the_fingerprint():
    code = code_fingerprint()
    base = run_fingerprint(RunConfig(), {"u.data": "abc"}, code)
    assert run_fingerprint(RunConfig(), {"u.data": "abc"}, code) == base
    assert run_fingerprint(RunConfig(seed=43), {"u.data": "abc"}, code) != base
    assert run_fingerprint(RunConfig().replace_model("mf", dim=64), {"u.data": "abc"}, code) != base
    assert run_fingerprint(RunConfig().replace_training(max_epochs=3), {"u.data": "abc"}, code) != base
    assert run_fingerprint(RunConfig(), {"u.data": "abd"}, code) != base
