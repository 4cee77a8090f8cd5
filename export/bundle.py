"""The bundle writer: export each trained model's graphs, check them, and publish the bundle atomically."""
from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Iterable
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from contract import bundle_format as layout, strict_json
from contract.bundle_format import GRAPH_OUTPUTS, ModelGraphs
from contract.checksums import sha256_file
from contract.tables import id_type
from contract.errors import BundleError, StoreError
from contract.machine import available_cpus
from contract.publish import BUNDLE_IN_USE, STAGING_PREFIX
from contract.retention import DEFAULT_KEEP, published
from contract.roots import PublishRoot, StoreRoot, open_root
from contract.store import Location, is_remote
from scoring.bundle import ITEM_REFERENCE_ARRAYS, REFERENCE_ARRAYS, load_bundle
from scoring.bundle_fetch import local_bundle
from scoring.feeds import UserContext, build_feeds

from .config import PARITY_MAX_TEST_PAIRS, RunConfig, child_seed
from .data.dataset import Dataset, seen_csr
from .data.sequences import user_context
from .data_checks import DataCheckOptions
from .gate import GateOptions, evaluate_gate, refusal, untested_without_previous
from .models import registry
from .onnx.export import EXPORTER_SETTINGS, export_graph
from .onnx.parity import TorchReference, check_graphs, reference_pairs, torch_reference
from .training.metrics import rating_errors
from .training.trainer import TrainedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleSetup:
    """What every model's export in one bundle shares."""

    dataset: Dataset
    config: RunConfig
    staging: Path
    bundle_id: str
    context: UserContext
    """Each user's latest rated items, as long as the longest context any model reads."""
    pairs: tuple[np.ndarray, np.ndarray]
    """The reference pairs (user, item indices) every model is checked at."""


def export_graphs(trained: TrainedModel, setup: BundleSetup) -> ModelGraphs:
    """Write the model's ONNX graphs into the staging folder."""
    family = registry.get(trained.name)
    modules = family.graphs(trained.module, setup.dataset.scale)
    inputs = family.graph_inputs()
    graphs = ModelGraphs.in_folder(setup.staging, trained.name, {kind: inputs[kind] for kind in modules},
                                   family.context_length(trained.config))
    context = setup.context.last(graphs.context_length)
    metadata = {"model": trained.name, "bundle_id": setup.bundle_id, "test_metrics": trained.test_metrics}
    users, items = np.arange(2) % setup.dataset.vocab.n_users, np.arange(2) % setup.dataset.vocab.n_items
    for kind, module in modules.items():
        names = graphs.inputs[kind]
        feeds = build_feeds(names, users, items if kind in ("pairwise", "item_vectors") else None, context)
        example = tuple(torch.as_tensor(feeds[name]) for name in names)
        export_graph(module, example, names, graphs.paths[kind], {**metadata, "graph": kind}, GRAPH_OUTPUTS[kind])
    return graphs


def export_model(trained: TrainedModel, setup: BundleSetup) -> tuple[TorchReference, dict[str, Any]]:
    """Export one model's graphs and weights, check every graph against torch at the reference
    pairs, and return torch's outputs there with the model's manifest entry."""
    started = time.perf_counter()
    family = registry.get(trained.name)
    graphs = export_graphs(trained, setup)
    reference = torch_reference(family, trained.module, setup.context, *setup.pairs, graphs.context_length)
    vocab = setup.dataset.vocab
    raw = (vocab.user_ids[reference.users], vocab.item_ids[reference.items])
    parity = check_graphs(graphs, setup.context, reference, raw, vocab.n_items, vocab.item_ids)
    parity["test_pairs"] = min(len(setup.dataset.test), PARITY_MAX_TEST_PAIRS)
    log.info("%s parity over %d pairs: %s", trained.name, len(reference.users),
             {k: f"{v:.2e}" for k, v in parity.items() if k.endswith("diff")})
    torch.save(trained.module.state_dict(), setup.staging / layout.torch_weights_file(trained.name))
    entry = {
        **graphs.manifest_entry(),
        "family": type(family).__module__ + "." + type(family).__name__,
        "test_metrics": trained.test_metrics,
        "untuned_reference_rmse_unit": family.untuned_reference_rmse,
        "best_epoch": trained.fit.best_epoch,
        "best_validation_rmse_unit": trained.fit.best_val_rmse,
        "out_of_time": trained.fit.out_of_time,
        "batch_size": trained.fit.batch_size,
        "learning_rate": trained.fit.learning_rate,
        "weight_decay": trained.fit.weight_decay,
        "learning_curve": trained.fit.epochs,
        "refit_curve": trained.fit.refit_epochs,
        "rank_cuts": trained.fit.cuts,
        "ranking_fit": trained.fit.ranking.to_dict() if trained.fit.ranking is not None else None,
        "histogram": trained.histogram,
        "train_seconds": round(trained.fit.seconds, 3),
        "export_seconds": round(time.perf_counter() - started, 3),
        "parity": parity,
        "parameters": int(sum(p.numel() for p in trained.module.parameters())),
    }
    return reference, entry


def write_vocabulary_and_context(dataset: Dataset, context: UserContext, staging: Path) -> None:
    """The users and items files (raw ids, titles) and the users' context arrays."""
    vocab = dataset.vocab
    pq.write_table(pa.table({"user_id": pa.array(vocab.user_ids, id_type(vocab.user_ids))}), staging / layout.USERS)
    titles = [dataset.item_titles.get(i.item()) for i in vocab.item_ids]
    pq.write_table(pa.table({"item_id": pa.array(vocab.item_ids, id_type(vocab.item_ids)),
                             "title": pa.array(titles, pa.string())}), staging / layout.ITEMS)
    indptr, seen = seen_csr(dataset.history, vocab.n_users)
    np.savez(staging / layout.CONTEXT, seen_indptr=indptr, seen_items=seen,
             latest_items=context.latest_items, latest_ratings=context.latest_ratings)
    np.savez(staging / layout.HELD_OUT, users=dataset.test.users, items=dataset.test.items)


def write_references(references: dict[str, TorchReference], staging: Path) -> None:
    """Torch's outputs at the reference pairs; keys sorted so the file's bytes do not depend on
    the order in which the models finished training."""
    arrays = {f"{model}_{name}": getattr(ref, name) for model, ref in references.items()
              for name in (*REFERENCE_ARRAYS, *ITEM_REFERENCE_ARRAYS) if getattr(ref, name) is not None}
    np.savez(staging / layout.REFERENCE, **dict(sorted(arrays.items())))


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "pandas": pd.__version__,
            "pyarrow": pa.__version__}


def bundle_manifest(setup: BundleSetup, created: datetime, fingerprint: str, data_checksums: dict[str, str],
                    models: dict[str, Any], trained_configs: dict[str, Any]) -> dict[str, Any]:
    """The manifest; its ``config`` is the run's, each model's settings as trained (``trained_configs``:
    what rebuilds its weights)."""
    dataset = setup.dataset
    config = dataclasses.replace(setup.config, model_configs={**setup.config.model_configs, **trained_configs})
    train_mean = np.full(len(dataset.test), dataset.train.ratings.mean(), np.float32)
    return {
        "schema_version": layout.SCHEMA_VERSION,
        "bundle_id": setup.bundle_id,
        "created_utc": created.isoformat(),
        "fingerprint": fingerprint,
        "seed": setup.config.seed,
        "config": config.to_dict(),
        "data": {"files_md5": data_checksums, **dataset.notes, "n_train": len(dataset.train),
                 "n_validation": len(dataset.validation), "n_test": len(dataset.test),
                 "n_history": len(dataset.history)},
        "n_users": dataset.vocab.n_users,
        "n_items": dataset.vocab.n_items,
        "feedback": dataset.feedback,
        "rating_scale": dataset.scale.to_dict(),
        "padding_index": dataset.vocab.n_items,
        "baseline_global_mean": None if dataset.implicit else rating_errors(train_mean, dataset.test.ratings,
                                                                          dataset.scale),
        "floor_rmse_stars": dataset.floor_rmse_stars,
        "model_names": [m for m in setup.config.models if m in models],
        "models": models,
        "exporter": EXPORTER_SETTINGS,
        "versions": versions(),
        "files": {p.name: sha256_file(p) for p in sorted(setup.staging.iterdir())},
    }


def _setup(dataset: Dataset, config: RunConfig, staging: Path, bundle_id: str) -> BundleSetup:
    vocab = dataset.vocab
    length = max(registry.get(m).context_length(config.model_config(m)) for m in config.models)
    rng = np.random.default_rng(child_seed(config.seed, "parity"))
    pairs = reference_pairs(vocab.n_users, vocab.n_items, dataset.test.users, dataset.test.items, rng)
    return BundleSetup(dataset, config, staging, bundle_id,
                       user_context(dataset.history, vocab.n_users, vocab.n_items, length), pairs)


@dataclass(frozen=True)
class PublishPolicy:
    """What happens around a bundle's publication: the model gate, and retention."""

    gate: GateOptions = GateOptions()
    keep: int = DEFAULT_KEEP
    """Bundles kept under the artifacts root (0: all); those a kept scoring run read are kept too."""
    runs_root: Location | None = None
    """The scoring runs' output root, whose runs' bundles retention spares."""
    data: DataCheckOptions = DataCheckOptions()
    data_record: dict[str, Any] | None = None
    """The data checks' record, written into the manifest (set once the checks have run)."""


def build_bundle(dataset: Dataset, trained: Iterable[TrainedModel], config: RunConfig, fingerprint: str,
                 data_checksums: dict[str, str], artifacts_root: Location,
                 policy: PublishPolicy = PublishPolicy()) -> Location:
    """Export every trained model into a staging bundle, check parity, pass it through the model
    gate and publish it atomically (as ``latest`` unless the gate refuses it: GateRefused then,
    the bundle kept beside the others).

    ``trained`` may be lazy (``workers.trained_as_completed``): each model is exported and checked
    as it arrives, while the others still train. The artifacts root is locked before the first one
    is asked for, so that a second trainer of the same root fails at once, not after training.
    """
    root = open_root(artifacts_root)
    with root.lock(False, "wait for it to finish (no two trainings publish into one artifacts root)"):
        bundle_id, created = root.new_name(datetime.now(timezone.utc), fingerprint, "second")
        root.clean()
        staging = root.staging(bundle_id)
        try:
            setup = _setup(dataset, config, staging, bundle_id)
            references: dict[str, TorchReference] = {}
            models: dict[str, Any] = {}
            trained_configs: dict[str, Any] = {}
            for model in trained:
                references[model.name], models[model.name] = export_model(model, setup)
                trained_configs[model.name] = model.config
            write_references(references, staging)
            write_vocabulary_and_context(dataset, setup.context, staging)
            manifest = bundle_manifest(setup, created, fingerprint, data_checksums, models, trained_configs)
            manifest["data_checks"] = policy.data_record
            (staging / layout.MANIFEST).write_text(strict_json.dumps(manifest, indent=2, sort_keys=True))
            manifest["gate"] = gate_record(dataset, config, staging, root.latest(), policy.gate)
            (staging / layout.MANIFEST).write_text(strict_json.dumps(manifest, indent=2, sort_keys=True))
            final = root.publish(staging, bundle_id, switch=manifest["gate"]["published_as_latest"])
        except BaseException:
            root.discard(staging)
            raise
        prune_bundles(root, policy)
    if not manifest["gate"]["published_as_latest"]:
        raise refusal(manifest["gate"], str(final), dataset.test_described)
    log.info("bundle published: %s", final, extra={"stage": "published", "figures": {"bundle_id": bundle_id}})
    return final


def gate_record(dataset: Dataset, config: RunConfig, staging: Path, previous: Location | None,
                options: GateOptions) -> dict[str, Any]:
    """The staged bundle's models against those of ``previous`` (the current ``latest``)."""
    old = None
    if previous is not None:
        try:
            old = load_bundle(local_bundle(previous))
        except BundleError as exc:
            log.warning("model gate: the current bundle cannot be read (%s); nothing to compare with", exc)
    new = load_bundle(staging)
    if old is None:
        untested_without_previous(new, dataset.test_described)
    record = evaluate_gate(new, old, dataset.test, dataset.train.concat(dataset.validation),
                           options, available_cpus(), child_seed(config.seed, "gate"))
    if not record["passed"]:
        log.warning("model gate: %s%s", "; ".join(record["refusals"]),
                    " (published anyway: --accept-worse)" if options.accept_worse else "")
    return record


def bundles_in_use(runs_root: Location | None) -> set[str]:
    """Bundle folders that scoring runs under ``runs_root`` were scored from or are reading now."""
    if is_remote(runs_root):
        root = StoreRoot(str(runs_root))
        names = {Path(m["bundle"]["path"]).name for m in root.manifests() if "path" in m.get("bundle", {})}
        note = root.lease_note()
        return names | ({note["bundle"]} if "bundle" in note else set())
    if runs_root is None or not Path(runs_root).is_dir():
        return set()
    runs_root = Path(runs_root)
    names = set()
    for run in published(runs_root):
        try:
            names.add(Path(json.loads((run / "manifest.json").read_text())["bundle"]["path"]).name)
        except (OSError, ValueError, KeyError):
            continue
    for marker in runs_root.glob(f"{STAGING_PREFIX}*/{BUNDLE_IN_USE}"):
        try:
            names.add(marker.read_text().strip())
        except OSError:
            continue
    return names


def prune_bundles(root: PublishRoot, policy: PublishPolicy) -> None:
    """Retention after a publish; a failure to remove old bundles is reported, the bundle stands."""
    try:
        root.prune(policy.keep, bundles_in_use(policy.runs_root))
    except (OSError, StoreError) as exc:
        log.warning("retention: could not remove old bundles under %s (%s); they are left for the next run",
                    root.location, exc)
