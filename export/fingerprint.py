"""A bundle's identity: the code, settings and data that determine its contents.

Same fingerprint, same bundle: ``make score`` reuses a bundle whose fingerprint matches. The code
part covers exactly the modules whose edits can change a bundle's files: the data stage, the
model families (each registered family's own module too, wherever it lives), training, ONNX
export, the bundle writer, and the shared format and scale. Evaluation, the benchmark and the
scoring job are left out: editing them changes no bundle.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from .config import RunConfig
from .models import registry

PROJECT_ROOT = Path(__file__).resolve().parent.parent

BUNDLE_SOURCES = (
    "export/config.py",
    "export/bundle.py",
    "export/data",
    "export/models",
    "export/training",
    "export/onnx",
    "contract/bundle_format.py",
    "contract/scale.py",
    "scoring/feeds.py",
)
"""Files and folders (relative to the project root) whose code determines a bundle's contents."""


def _source_files(root: Path, models: tuple[str, ...]) -> list[Path]:
    files: set[Path] = set()
    for entry in BUNDLE_SOURCES:
        path = root / entry
        files.update(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    for name in models:   # a family defined outside the project (a plugin or a test) counts too
        module = sys.modules.get(type(registry.get(name)).__module__)
        source = getattr(module, "__file__", None)
        if source:
            files.add(Path(source).resolve())
    return sorted(files)


def code_fingerprint(root: Path = PROJECT_ROOT, models: tuple[str, ...] = ()) -> str:
    """SHA-256 over the source files that define a bundle's contents, and the families of ``models``."""
    digest = hashlib.sha256()
    for file in _source_files(root, models):
        name = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name
        digest.update(name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def run_fingerprint(config: RunConfig, data_checksums: dict[str, str], code: str) -> str:
    """Identity of a bundle's inputs: same fingerprint, same bundle."""
    payload = {"config": config.to_dict(), "data": sorted(data_checksums.values()), "code": code,
               "torch": torch.__version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
