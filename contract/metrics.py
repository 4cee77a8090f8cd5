"""``--metrics-file``: a run's figures in the Prometheus text format, for node_exporter's textfile
collector, written atomically (a temporary file renamed over the old one) so the collector never
reads half a file."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .store import Location, Store, is_remote

PREFIX = "recjob"
"""Every metric's name starts with ``recjob_<job>_``."""


@dataclass(frozen=True)
class Sample:
    """One value of one metric."""

    name: str
    """Without the ``recjob_<job>_`` prefix, e.g. ``stage_seconds``."""
    value: float
    labels: dict[str, str] = field(default_factory=dict)
    help: str = ""


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(job: str, samples: list[Sample]) -> str:
    """The exposition text: one ``# HELP``/``# TYPE gauge`` block per metric, samples in order."""
    blocks: dict[str, list[Sample]] = {}
    for sample in samples:
        blocks.setdefault(f"{PREFIX}_{job}_{sample.name}", []).append(sample)
    lines = []
    for name, group in blocks.items():
        help_text = next((s.help for s in group if s.help), name)
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for s in group:
            labels = ",".join(f'{k}="{_label_value(str(v))}"' for k, v in s.labels.items())
            lines.append(f"{name}{{{labels}}} {_number(s.value)}" if labels else f"{name} {_number(s.value)}")
    return "\n".join(lines) + "\n"


def check_metrics_path(path: Location) -> None:
    """UsageError (StoreError on a store), before any work, when the metrics file could not be written."""
    if is_remote(path):
        Store.open(str(path).rsplit("/", 1)[0]).check_access()
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UsageError(f"--metrics-file {path}: folder {folder} does not exist or is not writable")
    if path.is_dir():
        raise UsageError(f"--metrics-file {path}: is a directory")


def write_metrics(path: Location, job: str, samples: list[Sample]) -> None:
    """Write ``samples`` to ``path`` atomically (an object store's put is: readers see the old object or the new)."""
    if is_remote(path):
        folder, name = str(path).rsplit("/", 1)
        Store.open(folder).write_bytes(name, render(job, samples).encode())
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(render(job, samples))
    os.replace(tmp, path)
