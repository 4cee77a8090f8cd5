"""Named crash points for the crash-safety tests: ``RECJOB_FAILPOINT=<name>`` makes the process
SIGKILL itself when it reaches that point, the way a power cut or the OOM killer would.
Training has one, ``training_worker_started``, passed by each training worker process once set up.

Unset (always, outside the tests) a failpoint costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

ENVIRONMENT_VARIABLE = "RECJOB_FAILPOINT"

SCORING_POINTS = (
    "after_bundle_load",
    "after_lock",
    "after_staging_created",
    "mid_model_first_chunk",
    "mid_model_write",
    "after_first_model",
    "after_all_models",
    "after_verify",
    "after_manifest",
    "after_success_marker",
    "after_rename",
    "after_latest_switch",
    "mid_prune",
)
"""Every failpoint the scoring job passes publishing to a local root, in order."""

STORE_POINTS = (
    "after_store_files",
    "after_store_manifest",
    "after_success_marker",
    "after_latest_switch",
    "mid_prune",
)
"""The failpoints where a run publishing to an object store differs from a local one: its upload,
manifest, ``_SUCCESS``, pointer switch and pruning (``contract.roots.StoreRoot``); the earlier
ones are the same code on both kinds of root."""


def failpoint(name: str) -> None:
    """Die at once, without cleanup, if the environment names this point."""
    if os.environ.get(ENVIRONMENT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
