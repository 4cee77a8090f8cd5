"""The installed commands: each one [project.scripts] names is on the environment's PATH and runs
its module's command line."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_module_with_a_command_line_has_a_command():
    assert {"recjob-export", "recjob-score", "recjob-verify", "recjob-evaluate"} <= set(SCRIPTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_command_is_installed_and_answers_help(name):
    command = shutil.which(name, path=str(Path(sys.executable).parent))
    assert command is not None, f"{name} is not installed beside {sys.executable} (pip install -e .)"
    done = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")
