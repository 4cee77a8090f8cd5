"""Atomic publication and the output-root lock."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from contract.errors import LockError, PublishError
from contract.publish import (LATEST, POINTER_FILE, SUCCESS_MARKER, RootLock, new_name, new_staging_dir, prepare_root,
                             publish, remove_stale_staging, resolve_latest)
from contract.retention import PUBLISHED_NAME

HOLD_LOCK = """
import sys, time
from pathlib import Path
from contract.publish import RootLock
with RootLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_publish_moves_the_run_and_switches_latest(tmp_path):
    root = prepare_root(tmp_path / "out")
    assert resolve_latest(root) is None
    for name in ("run-1", "run-2"):
        staging = new_staging_dir(root, name)
        (staging / "table.parquet").write_bytes(b"x")
        publish(staging, root, name)
        assert resolve_latest(root) == root / name
        assert (root / name / SUCCESS_MARKER).exists()
        assert (root / POINTER_FILE).read_text() == name + "\n"   # for stores without symbolic links
    assert os.readlink(root / LATEST) == "run-2"  # relative: the root can be moved or mounted elsewhere
    assert sorted(p.name for p in root.iterdir()) == [POINTER_FILE, LATEST, "run-1", "run-2"]


def test_output_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(PublishError, match="exists but is not a directory"):
        prepare_root(tmp_path / "file")


def test_a_second_holder_is_refused_and_a_dead_holder_releases_the_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockError, match=f"pid {holder.pid}"):
            with RootLock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            with RootLock(tmp_path):
                break
        except LockError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_staging_left_by_a_killed_run_is_removed(tmp_path):
    stale = new_staging_dir(tmp_path, "killed")
    (stale / "half.parquet").write_bytes(b"partial")
    assert remove_stale_staging(tmp_path) == [stale]
    assert not stale.exists()


@pytest.mark.parametrize("clock, first, second", [
    ("microsecond", "20261201T050108329926Z-fb948d2142", "20261201T050108329927Z-fb948d2142"),
    ("second", "20261201T050108Z-fb948d2142", "20261201T050109Z-fb948d2142"),
])
def test_a_name_in_use_moves_the_time_on_one_tick(tmp_path, clock, first, second):
    now = datetime(2026, 12, 1, 5, 1, 8, 329926, tzinfo=timezone.utc)
    digest = "fb948d2142" + "0" * 54
    name, named = new_name(tmp_path, now, digest, clock)
    assert (name, named) == (first, now) and PUBLISHED_NAME.match(name)
    (tmp_path / name).mkdir()
    name, named = new_name(tmp_path, now, digest, clock)
    assert name == second and named > now and PUBLISHED_NAME.match(name)
