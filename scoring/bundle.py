"""The model bundle contract: file layout, schema version, and a validating loader.

The trainer (``export``) writes bundles with these names; the scoring job reads them with
numpy, pyarrow and onnxruntime only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .checksums import sha256_file
from .errors import BundleError
from .schema import MODEL_NAMES

SCHEMA_VERSION = 3
"""Bumped whenever a file's name, layout or meaning changes; the loader rejects other versions."""

MANIFEST = "manifest.json"
USERS = "users.parquet"
ITEMS = "items.parquet"
HISTORY = "history.npz"
REFERENCE = "reference.npz"

PARITY_TOLERANCE = 1e-5
"""Largest allowed |onnxruntime - torch| on the [0, 1] scale, at export and before every publish."""

SCORE_OUTPUT = "score"
"""Graph output on the training scale [0, 1], unclipped; ranking and parity use it."""
RATING_OUTPUT = "rating"
"""Graph output in stars, clipped to [1, 5]; the predictions table holds it."""
RANK_OUTPUT = "rank"
"""Graph output: logit that the user rates the item at all; the recommendations are ordered by it."""
OUTPUTS = (SCORE_OUTPUT, RATING_OUTPUT, RANK_OUTPUT)
"""Outputs of the pairwise and all-items graphs."""
RANKING_OUTPUTS = (RANK_OUTPUT,)
"""Outputs of the ranking graphs."""

ALL_ITEMS_INPUTS: dict[str, tuple[str, ...]] = {
    "mf": ("user",),
    "dense": ("user",),
    "lstm": ("user", "history_items", "history_ratings"),
}
"""Inputs of each all-items graph, ``[B] -> [B, n_items]``, the graphs the scoring job runs."""

RANKING_INPUTS: dict[str, tuple[str, ...]] = {"mf": ("user",), "dense": ("user",), "lstm": ("user",)}
"""Inputs of each ranking graph: every family's ranking head is a product of user and item
factors, so none needs the LSTM's history."""

PAIRWISE_INPUTS: dict[str, tuple[str, ...]] = {
    "mf": ("user", "item"),
    "dense": ("user", "item"),
    "lstm": ("user", "items", "ratings"),
}
"""Inputs of each pairwise graph, one prediction per row, the models as trained."""


def pair_windows(history_items: np.ndarray, history_ratings: np.ndarray, users: np.ndarray,
                 items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The LSTM pairwise graph's ``items`` and ``ratings`` [P, L] for (user, item) index pairs:
    each user's latest history window followed by the item, whose own rating slot is 0."""
    return (np.concatenate([history_items[users], items[:, None]], axis=1),
            np.concatenate([history_ratings[users], np.zeros((len(users), 1), np.float32)], axis=1))


def pairwise_graph_file(model: str) -> str:
    """File name of a model's pairwise ONNX graph."""
    return f"{model}.onnx"


def all_items_graph_file(model: str) -> str:
    """File name of a model's all-items ONNX graph."""
    return f"{model}.all_items.onnx"


def ranking_graph_file(model: str) -> str:
    """File name of a model's ranking ONNX graph: the all-items graph with ``rank`` only."""
    return f"{model}.ranking.onnx"


def graph_files(model: str) -> list[str]:
    """Every ONNX graph file of a model."""
    return [pairwise_graph_file(model), all_items_graph_file(model), ranking_graph_file(model)]


def torch_weights_file(model: str) -> str:
    """File name of a model's torch ``state_dict`` (read by ``make verify`` only)."""
    return f"{model}.pt"


@dataclass(frozen=True)
class Reference:
    """Torch outputs for a fixed set of pairs, stored at export to check every later scoring run."""

    users: np.ndarray
    """User indices, int64 [P]."""
    items: np.ndarray
    """Item indices, int64 [P]."""
    scores: np.ndarray
    """Torch scores on the [0, 1] scale, float32 [P]."""
    ranks: np.ndarray
    """Torch ranking logits, float32 [P]."""


@dataclass(frozen=True)
class Bundle:
    """A loaded, checksum-verified model bundle."""

    path: Path
    manifest: dict[str, Any]
    user_ids: np.ndarray
    """Raw MovieLens user id of each user index, int32 [n_users]."""
    item_ids: np.ndarray
    """Raw MovieLens item id of each item index, int32 [n_items], ascending."""
    item_titles: list[str | None]
    seen_indptr: np.ndarray
    """CSR row pointers of each user's history items (excluded from top-N), int64 [n_users + 1]."""
    seen_items: np.ndarray
    """CSR item indices of each user's history, int64."""
    history_items: np.ndarray
    """The LSTM's input: each user's latest items, left-padded, int64 [n_users, window - 1]."""
    history_ratings: np.ndarray
    """Ratings of ``history_items`` on the [0, 1] scale, float32 [n_users, window - 1]."""
    references: dict[str, Reference]

    @property
    def models(self) -> list[str]:
        """Models present in the bundle, in the canonical order."""
        return [m for m in MODEL_NAMES if m in self.manifest["models"]]

    @property
    def bundle_id(self) -> str:
        return str(self.manifest["bundle_id"])

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    def graph_path(self, model: str) -> Path:
        return self.path / all_items_graph_file(model)

    def pairwise_graph_path(self, model: str) -> Path:
        return self.path / pairwise_graph_file(model)

    def ranking_graph_path(self, model: str) -> Path:
        return self.path / ranking_graph_file(model)


def read_manifest(path: Path) -> dict[str, Any]:
    """Parse and check a bundle's manifest: present, JSON, and of this schema version."""
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"{path}: model bundle directory not found (run `make train` first)")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: bundle manifest is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not a readable JSON manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: expected a JSON object at the top level")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{manifest_path}: field 'schema_version' is {version!r}; this code reads version "
            f"{SCHEMA_VERSION} (re-run `make train` to rebuild the bundle)"
        )
    for key in ("bundle_id", "models", "files", "n_users", "n_items"):
        if key not in manifest:
            raise BundleError(f"{manifest_path}: required field '{key}' is missing")
    unknown = sorted(set(manifest["models"]) - set(MODEL_NAMES))
    if unknown:
        raise BundleError(f"{manifest_path}: field 'models' names unknown models {unknown}; "
                          f"expected a subset of {list(MODEL_NAMES)}")
    return manifest


def verify_files(path: Path, manifest: dict[str, Any], names: list[str]) -> None:
    """Check that each named file exists and has the SHA-256 the manifest records."""
    recorded = manifest["files"]
    for name in names:
        file_path = path / name
        if name not in recorded:
            raise BundleError(f"{path / MANIFEST}: field 'files' has no checksum for '{name}'")
        if not file_path.is_file():
            raise BundleError(f"{file_path}: bundle file is missing")
        actual = sha256_file(file_path)
        if actual != recorded[name]:
            raise BundleError(
                f"{file_path}: sha256 {actual[:16]}... does not match the manifest's "
                f"{str(recorded[name])[:16]}...; the file is corrupted or was replaced"
            )


def _load_npz(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data]
            if missing:
                raise BundleError(f"{path}: arrays {missing} are missing")
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: not a readable .npz archive ({exc})") from exc


def _int32_column(table: pa.Table, name: str, path: Path) -> np.ndarray:
    """A non-null int32 column as numpy, read from its buffer: pyarrow's ``to_numpy`` imports
    pandas, which would add ~0.4 s to every scoring run's start."""
    if name not in table.column_names or table.schema.field(name).type != pa.int32():
        raise BundleError(f"{path}: expected an int32 column '{name}'")
    column = table.column(name).combine_chunks()
    if column.null_count:
        raise BundleError(f"{path}: column '{name}' has missing values")
    return np.frombuffer(column.buffers()[1], dtype=np.int32, count=len(column), offset=column.offset * 4).copy()


def load_bundle(path: Path, models: list[str] | None = None) -> Bundle:
    """Load a bundle for scoring, verifying schema version and every checksum it relies on."""
    path = Path(path)
    manifest = read_manifest(path)
    chosen = list(manifest["models"]) if models is None else models
    missing = [m for m in chosen if m not in manifest["models"]]
    if missing:
        raise BundleError(f"{path / MANIFEST}: bundle has no model {missing}; it holds {manifest['models']}")
    names = [USERS, ITEMS, HISTORY, REFERENCE] + [f for m in chosen for f in graph_files(m)]
    verify_files(path, manifest, names)

    # ParquetFile, not read_table: read_table imports pyarrow.dataset, ~0.5 s of start-up.
    users = pq.ParquetFile(path / USERS).read()
    items = pq.ParquetFile(path / ITEMS).read()
    user_ids = _int32_column(users, "user_id", path / USERS)
    item_ids = _int32_column(items, "item_id", path / ITEMS)
    titles = items.column("title").to_pylist() if "title" in items.column_names else [None] * len(item_ids)
    if len(user_ids) != manifest["n_users"] or len(item_ids) != manifest["n_items"]:
        raise BundleError(f"{path}: users/items files hold {len(user_ids)}/{len(item_ids)} rows; "
                          f"the manifest says {manifest['n_users']}/{manifest['n_items']}")

    history = _load_npz(path / HISTORY, ["seen_indptr", "seen_items", "history_items", "history_ratings"])
    if history["seen_indptr"].shape != (len(user_ids) + 1,):
        raise BundleError(f"{path / HISTORY}: 'seen_indptr' has shape {history['seen_indptr'].shape}; "
                          f"expected ({len(user_ids) + 1},)")
    reference_arrays = _load_npz(path / REFERENCE, [])
    references = {}
    for model in chosen:
        keys = [f"{model}_users", f"{model}_items", f"{model}_scores", f"{model}_ranks"]
        if any(k not in reference_arrays for k in keys):
            raise BundleError(f"{path / REFERENCE}: reference outputs for model '{model}' are missing")
        references[model] = Reference(*(reference_arrays[k] for k in keys))
    return Bundle(
        path=path,
        manifest=manifest,
        user_ids=user_ids,
        item_ids=item_ids,
        item_titles=titles,
        seen_indptr=history["seen_indptr"].astype(np.int64),
        seen_items=history["seen_items"].astype(np.int64),
        history_items=history["history_items"].astype(np.int64),
        history_ratings=history["history_ratings"].astype(np.float32),
        references=references,
    )
