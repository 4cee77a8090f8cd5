"""Load a model bundle for scoring: check its manifest and every checksum, read its arrays.

The format itself (file names, graph outputs, feeds) is ``contract.bundle_format``; this module
reads it with numpy, pyarrow and the manifest alone, never torch.
"""
from __future__ import annotations

import hashlib

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contract.bundle_format import (CONTEXT, CONTEXT_ARRAYS, GRAPH_KINDS, ITEMS, MANIFEST, OPTIONAL_GRAPH_KINDS,
                                    REFERENCE, SCHEMA_VERSION, USERS, ModelGraphs, graph_input_problem,
                                    torch_weights_file)
from contract.checksums import sha256_file
from contract.errors import BundleError
from contract.feedback import EXPLICIT, IMPLICIT, SCORE_COLUMN
from contract.scale import RatingScale
from contract.tables import ID_TYPES

from .feeds import UserContext

REFERENCE_ARRAYS = ("users", "items", "unit_ratings", "logits")
"""Per model, in ``REFERENCE`` as ``<model>_<array>``: see ``Reference``."""
ITEM_REFERENCE_ARRAYS = ("vector_items", "item_vectors")
"""Per model with an ``item_vectors`` graph, in ``REFERENCE`` as ``<model>_<array>``."""


@dataclass(frozen=True)
class Reference:
    """Torch outputs for a fixed set of pairs, stored at export to check every later scoring run."""

    users: np.ndarray
    """User indices, int64 [P]."""
    items: np.ndarray
    """Item indices, int64 [P]."""
    unit_ratings: np.ndarray
    """Torch ratings on the [0, 1] scale, float32 [P]."""
    logits: np.ndarray
    """Torch ranking logits, float32 [P]."""
    vector_items: np.ndarray | None = None
    """Item indices, int64 [Q], where torch's item vectors are kept (models with an
    ``item_vectors`` graph only)."""
    item_vectors: np.ndarray | None = None
    """Torch's unit-length item vectors there, float32 [Q, D]."""


@dataclass(frozen=True)
class Bundle:
    """A loaded, checksum-verified model bundle."""

    path: Path
    manifest: dict[str, Any]
    user_ids: np.ndarray
    """Raw user id of each user index [n_users], ascending: int32, int64 or text (numpy unicode)."""
    item_ids: np.ndarray
    """Raw item id of each item index [n_items], ascending, of the same kinds."""
    user_id_array: pa.Array
    """``user_ids`` as Arrow, typed as the tables' ``user_id`` column."""
    item_id_array: pa.Array
    """``item_ids`` as Arrow, typed as the tables' ``item_id`` column."""
    item_titles: list[str | None]
    seen_indptr: np.ndarray
    """CSR row pointers of each user's history items (excluded from top-N), int64 [n_users + 1]."""
    seen_items: np.ndarray
    """CSR item indices of each user's history, int64."""
    context: UserContext
    """Each user's latest rated items, for the models that read them."""
    references: dict[str, Reference]

    @property
    def models(self) -> list[str]:
        """Models in the bundle, in the order they were trained and are scored."""
        return list(self.manifest["model_names"])

    @property
    def bundle_id(self) -> str:
        return str(self.manifest["bundle_id"])

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def scale(self) -> RatingScale:
        return scale_of(self.manifest)

    @property
    def feedback(self) -> str:
        """``explicit`` or ``implicit``: what the models were trained on (bundles from before the
        field are explicit)."""
        return str(self.manifest.get("feedback", EXPLICIT))

    @property
    def value_column(self) -> str:
        """The tables' column of the models' rating (explicit) or score (implicit)."""
        return SCORE_COLUMN[self.feedback]

    @property
    def coherence_midpoint(self) -> float | None:
        """The rating a recommended item's prediction should reach (``topn.coherent_first``); None
        for implicit feedback, whose low score says "less likely", not "disliked": logit order."""
        return None if self.feedback == IMPLICIT else self.scale.midpoint

    def graphs(self, model: str) -> ModelGraphs:
        """The model's graphs as the manifest lists them."""
        return model_graphs(self.path, self.manifest, model)

    def model_version(self, model: str) -> str:
        """The model's version: a hash of its family and trained weights (the weights file's
        checksum), the same for the same weights whichever bundle holds them. The graph files'
        checksums would not do: each graph also records the id of the bundle it was exported into."""
        entry = self.manifest["models"][model]
        identity = [entry.get("family", model), self.manifest["files"][torch_weights_file(model)],
                    str(entry["context_length"])]
        return hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]


def scale_of(manifest: dict[str, Any]) -> RatingScale:
    """The rating scale a manifest records."""
    return RatingScale(float(manifest["rating_scale"]["low"]), float(manifest["rating_scale"]["high"]))


def model_graphs(path: Path, manifest: dict[str, Any], model: str) -> ModelGraphs:
    entry = manifest["models"][model]
    kinds = [k for k in (*GRAPH_KINDS, *OPTIONAL_GRAPH_KINDS) if k in entry["graphs"]]
    return ModelGraphs(model, {k: path / entry["graphs"][k]["file"] for k in kinds},
                       {k: tuple(entry["graphs"][k]["inputs"]) for k in kinds}, int(entry["context_length"]))


def read_manifest(path: Path) -> dict[str, Any]:
    """Parse and check a bundle's manifest: present, JSON, of this schema version, and every
    model's graphs listed with inputs this code can feed."""
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
    for key in ("bundle_id", "model_names", "models", "files", "n_users", "n_items", "rating_scale"):
        if key not in manifest:
            raise BundleError(f"{manifest_path}: required field '{key}' is missing")
    for model in manifest["model_names"]:
        _check_model_entry(manifest_path, model, manifest["models"].get(model))
    return manifest


def _check_model_entry(manifest_path: Path, model: str, entry: Any) -> None:
    where = f"{manifest_path}: model '{model}'"
    if not isinstance(entry, dict) or "graphs" not in entry or "context_length" not in entry:
        raise BundleError(f"{where}: expected 'graphs' and 'context_length' fields")
    for kind in (*GRAPH_KINDS, *(k for k in OPTIONAL_GRAPH_KINDS if k in entry["graphs"])):
        graph = entry["graphs"].get(kind)
        if not isinstance(graph, dict) or "file" not in graph or not isinstance(graph.get("inputs"), list):
            raise BundleError(f"{where}: graph '{kind}' needs a 'file' and a list of 'inputs'")
        problem = graph_input_problem(kind, graph["inputs"])
        if problem:
            raise BundleError(f"{where}, graph '{kind}': {problem}")


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


def _id_column(table: pa.Table, name: str, path: Path) -> tuple[np.ndarray, pa.Array]:
    """A non-null id column (``contract.tables.ID_TYPES``) as numpy and as Arrow. Integers are read
    from their buffer: pyarrow's ``to_numpy`` imports pandas, which would slow every run's start."""
    if name not in table.column_names or table.schema.field(name).type not in ID_TYPES:
        raise BundleError(f"{path}: expected a column '{name}' of one of {[str(t) for t in ID_TYPES]}")
    column = table.column(name).combine_chunks()
    if column.null_count:
        raise BundleError(f"{path}: column '{name}' has missing values")
    if pa.types.is_string(column.type):
        return np.asarray(column.to_pylist(), dtype=str), column
    dtype = np.int32 if column.type == pa.int32() else np.int64
    width = np.dtype(dtype).itemsize
    values = np.frombuffer(column.buffers()[1], dtype=dtype, count=len(column), offset=column.offset * width).copy()
    return values, column


def _references(path: Path, models: list[str]) -> dict[str, Reference]:
    arrays = _load_npz(path, [])
    references = {}
    for model in models:
        keys = [f"{model}_{name}" for name in REFERENCE_ARRAYS]
        if any(k not in arrays for k in keys):
            raise BundleError(f"{path}: reference outputs for model '{model}' are missing")
        extra = [arrays.get(f"{model}_{name}") for name in ITEM_REFERENCE_ARRAYS]
        references[model] = Reference(*(arrays[k] for k in keys), *extra)
    return references


def load_bundle(path: Path, models: list[str] | None = None) -> Bundle:
    """Load a bundle for scoring, verifying schema version and every checksum it relies on."""
    path = Path(path)
    manifest = read_manifest(path)
    chosen = list(manifest["model_names"]) if models is None else models
    missing = [m for m in chosen if m not in manifest["model_names"]]
    if missing:
        raise BundleError(f"{path / MANIFEST}: bundle has no model {missing}; it holds {manifest['model_names']}")
    graph_files = [p.name for m in chosen for p in model_graphs(path, manifest, m).paths.values()]
    verify_files(path, manifest, [USERS, ITEMS, CONTEXT, REFERENCE] + graph_files)

    # ParquetFile, not read_table: read_table imports pyarrow.dataset, which slows start-up.
    users = pq.ParquetFile(path / USERS).read()
    items = pq.ParquetFile(path / ITEMS).read()
    user_ids, user_id_array = _id_column(users, "user_id", path / USERS)
    item_ids, item_id_array = _id_column(items, "item_id", path / ITEMS)
    titles = items.column("title").to_pylist() if "title" in items.column_names else [None] * len(item_ids)
    if len(user_ids) != manifest["n_users"] or len(item_ids) != manifest["n_items"]:
        raise BundleError(f"{path}: users/items files hold {len(user_ids)}/{len(item_ids)} rows; "
                          f"the manifest says {manifest['n_users']}/{manifest['n_items']}")
    context = _load_npz(path / CONTEXT, list(CONTEXT_ARRAYS))
    if context["seen_indptr"].shape != (len(user_ids) + 1,):
        raise BundleError(f"{path / CONTEXT}: 'seen_indptr' has shape {context['seen_indptr'].shape}; "
                          f"expected ({len(user_ids) + 1},)")
    latest = UserContext(context["latest_items"].astype(np.int64), context["latest_ratings"].astype(np.float32))
    for model in chosen:
        needed = model_graphs(path, manifest, model).context_length
        if needed > latest.length or latest.latest_items.shape[0] != len(user_ids):
            raise BundleError(f"{path / CONTEXT}: holds {latest.length} latest items for "
                              f"{latest.latest_items.shape[0]} users; model '{model}' needs {needed} for {len(user_ids)}")
    return Bundle(
        path=path,
        manifest={**manifest, "model_names": chosen},
        user_ids=user_ids,
        item_ids=item_ids,
        user_id_array=user_id_array,
        item_id_array=item_id_array,
        item_titles=titles,
        seen_indptr=context["seen_indptr"].astype(np.int64),
        seen_items=context["seen_items"].astype(np.int64),
        context=latest,
        references=_references(path / REFERENCE, chosen),
    )
