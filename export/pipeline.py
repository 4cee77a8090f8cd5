"""Train, evaluate, export and check each model, then publish a versioned bundle."""
from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import time
from collections.abc import Iterable
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

from scoring import bundle as layout
from scoring.bundle import PARITY_TOLERANCE
from scoring.checksums import sha256_file
from scoring.publish import RootLock, new_staging_dir, prepare_root, publish, remove_stale_staging

from .config import PARITY_MAX_TEST_PAIRS, REFITS, RunConfig
from .dataset import Dataset, Interactions, seen_csr
from .families import FAMILIES, History, init_parameters
from .graphs import PairwiseGraph, RankingOnly, all_items_graph
from .metrics import POST_RMSE_UNIT, clipped_stars, prediction_histogram, rating_errors
from .onnx_export import EXPORTER_SETTINGS, export_graph
from scoring.parity import RANK_TOLERANCE_RULE, check_parity

from .parity import all_items_outputs, pairwise_outputs, reference_pairs, session
from .training import FitResult, Objective, fit, predict_in_batches, refit

log = logging.getLogger(__name__)

SOURCE_FILES = ("export", "scoring/bundle.py")
"""Code whose changes make an existing bundle stale."""


@dataclass
class TrainedModel:
    """A fitted model with its fit history and test metrics."""

    name: str
    module: torch.nn.Module
    fit: FitResult
    test_metrics: dict[str, float]
    histogram: list[list[int]]
    """Predicted-star counts per true rating on the test set (see ``prediction_histogram``)."""


def seeds(seed: int) -> dict[str, int]:
    """Independent child seeds for the split, each model and the parity sample, from one seed."""
    names = ["split", "parity", "mf", "dense", "lstm"]
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: int(c.generate_state(1, dtype=np.uint32)[0]) for n, c in zip(names, children)}


def code_fingerprint(root: Path) -> str:
    """SHA-256 over the source files that define training, export and the bundle layout."""
    digest = hashlib.sha256()
    for entry in SOURCE_FILES:
        path = root / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def run_fingerprint(config: RunConfig, data_checksums: dict[str, str], code: str) -> str:
    """Identity of a bundle's inputs: same fingerprint, same bundle."""
    payload = {"config": config.to_dict(), "data": sorted(data_checksums.values()), "code": code,
               "torch": torch.__version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _on(device: torch.device, data: tuple[tuple[torch.Tensor, ...], torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    inputs, targets = data
    return tuple(x.to(device) for x in inputs), targets.to(device)


def train_model(name: str, dataset: Dataset, config: RunConfig, seed: int) -> TrainedModel:
    """Fit one family on the training split (early stopping on validation, then the configured
    refit on both, see ``TrainingConfig.refit``) on ``config.device``, and measure it on the test
    split, on the CPU."""
    family = FAMILIES[name]
    model_config = config.model_config(name)
    training = model_config.training
    if training.refit not in REFITS:
        raise ValueError(f"{name} training refit: expected one of {list(REFITS)}, got {training.refit!r}")
    vocab = dataset.vocab
    device = torch.device(config.device)

    def fresh(ratings: Interactions) -> tuple[torch.nn.Module, torch.Generator]:
        generator = torch.Generator().manual_seed(seed)
        module = family.build(model_config, vocab.n_users, vocab.n_items, float(ratings.unit.mean()))
        init_parameters(module, generator)
        return module.to(device), generator

    module, generator = fresh(dataset.train)
    context = History.of(dataset.train, vocab.n_users, vocab.n_items, config.lstm.window)
    train = _on(device, family.training_inputs(dataset.train, model_config, vocab.n_items))
    validation_inputs = family.pair_inputs(dataset.validation.users, dataset.validation.items, context)
    validation = (tuple(x.to(device) for x in validation_inputs), torch.as_tensor(dataset.validation.unit))
    objective = Objective(family.outputs, family.rank, family.penalty, family.with_items, vocab.n_items)
    result = fit(module, objective, train, validation, training, generator, name)
    if training.refit != "none" and len(dataset.validation) and not result.out_of_time:
        started = time.perf_counter()
        both = dataset.train.concat(dataset.validation)
        if training.refit == "fresh":
            module, generator = fresh(both)
            epochs = result.best_epoch
        else:   # "continue": the early-stopped module and its generator go on
            epochs = training.continue_epochs
        result.refit_epochs = refit(module, objective,
                                    _on(device, family.training_inputs(both, model_config, vocab.n_items)),
                                    epochs, training, generator, name)
        context = History.of(both, vocab.n_users, vocab.n_items, config.lstm.window)
        result.seconds += time.perf_counter() - started
    module = module.cpu()
    test_inputs = family.pair_inputs(dataset.test.users, dataset.test.items, context)
    predicted = predict_in_batches(module, family.predict, test_inputs).numpy()
    metrics = rating_errors(clipped_stars(predicted), dataset.test.stars)
    histogram = prediction_histogram(clipped_stars(predicted), dataset.test.stars)
    log.info("%s test: RMSE %.4f stars, MAE %.4f stars, RMSE %.4f on [0, 1] (post: %.2f)", name,
             metrics["rmse_stars"], metrics["mae_stars"], metrics["rmse_unit"], POST_RMSE_UNIT[name])
    return TrainedModel(name, module, result, metrics, histogram)


def baseline_metrics(dataset: Dataset) -> dict[str, float]:
    """Test error of predicting the training mean for every pair."""
    mean = float(dataset.train.stars.mean())
    return rating_errors(np.full(len(dataset.test), mean, np.float32), dataset.test.stars)


def _export_model(trained: TrainedModel, dataset: Dataset, history: History, staging: Path,
                  pairs: tuple[np.ndarray, np.ndarray], n_test: int, metadata: dict[str, Any]) -> dict[str, Any]:
    """Export both graphs of one model, check them against torch, and return the figures."""
    name, module = trained.name, trained.module
    family = FAMILIES[name]
    users, items = pairs
    vocab = dataset.vocab
    inputs = family.pair_inputs(users, items, history)
    reference = predict_in_batches(module, family.predict, inputs).numpy()
    reference_rank = predict_in_batches(module, family.rank, inputs).numpy()

    pairwise_path = staging / layout.pairwise_graph_file(name)
    example = tuple(x[:2] for x in inputs)
    export_graph(PairwiseGraph(module), example, layout.PAIRWISE_INPUTS[name], pairwise_path,
                 {**metadata, "graph": "pairwise"})
    all_path = staging / layout.all_items_graph_file(name)
    all_example = (torch.arange(2),) if not family.sequential else (
        torch.arange(2), torch.as_tensor(history.items[:2]), torch.as_tensor(history.ratings[:2]))
    all_items = all_items_graph(name, module)
    export_graph(all_items, all_example, layout.ALL_ITEMS_INPUTS[name], all_path, {**metadata, "graph": "all_items"})
    ranking_path = staging / layout.ranking_graph_file(name)
    export_graph(RankingOnly(all_items), all_example[:1], layout.RANKING_INPUTS[name], ranking_path,
                 {**metadata, "graph": "ranking"}, output_names=layout.RANKING_OUTPUTS)

    raw_users, raw_items = vocab.user_ids[users], vocab.item_ids[items]
    outputs = {"pairwise": pairwise_outputs(session(str(pairwise_path)), name, tuple(x.numpy() for x in inputs)),
               "all_items": all_items_outputs(session(str(all_path)), users, items, history)}
    parity: dict[str, Any] = {"tolerance": PARITY_TOLERANCE, "rank_tolerance": RANK_TOLERANCE_RULE,
                              "pairs": int(len(users)), "test_pairs": n_test}
    for graph, (score, rank) in outputs.items():
        context = f"export parity, {graph} graph"
        parity[f"{graph}_max_abs_diff"] = check_parity(name, reference, score, raw_users, raw_items, context)
        parity[f"{graph}_rank_max_abs_diff"] = check_parity(name, reference_rank, rank, raw_users, raw_items,
                                                            context + ", rank output", logits=True)
    (ranking_rank,) = all_items_outputs(session(str(ranking_path)), users, items, history,
                                        outputs=layout.RANKING_OUTPUTS)
    parity["ranking_rank_max_abs_diff"] = check_parity(name, reference_rank, ranking_rank, raw_users, raw_items,
                                                       "export parity, ranking graph", logits=True)
    log.info("%s parity over %d pairs: pairwise %.2e, all-items %.2e (tolerance %.0e); rank %.2e (tolerance %s)",
             name, len(users), parity["pairwise_max_abs_diff"], parity["all_items_max_abs_diff"], PARITY_TOLERANCE,
             max(parity["pairwise_rank_max_abs_diff"], parity["all_items_rank_max_abs_diff"],
                 parity["ranking_rank_max_abs_diff"]), RANK_TOLERANCE_RULE)
    torch.save(module.state_dict(), staging / layout.torch_weights_file(name))
    return {"reference": reference.astype(np.float32), "reference_rank": reference_rank.astype(np.float32),
            "parity": parity}


def _write_vocab_and_history(dataset: Dataset, history: History, staging: Path) -> None:
    vocab = dataset.vocab
    pq.write_table(pa.table({"user_id": pa.array(vocab.user_ids, pa.int32())}), staging / layout.USERS)
    titles = [dataset.item_titles.get(int(i)) for i in vocab.item_ids]
    pq.write_table(pa.table({"item_id": pa.array(vocab.item_ids, pa.int32()),
                             "title": pa.array(titles, pa.string())}), staging / layout.ITEMS)
    indptr, seen = seen_csr(dataset.history, vocab.n_users)
    np.savez(staging / layout.HISTORY, seen_indptr=indptr, seen_items=seen,
             history_items=history.items, history_ratings=history.ratings)


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "pandas": pd.__version__,
            "pyarrow": pa.__version__}


def build_bundle(dataset: Dataset, trained: Iterable[TrainedModel], config: RunConfig, fingerprint: str,
                 data_checksums: dict[str, str], artifacts_root: Path) -> Path:
    """Export every trained model into a staging bundle, check parity, and publish it atomically.

    ``trained`` may be lazy (``workers.trained_as_completed``): each model is exported and checked
    as it arrives, while the others still train. The artifacts root is locked before the first one
    is asked for, so that a second trainer of the same root fails at once, not after training.
    """
    root = prepare_root(artifacts_root)
    created = datetime.now(timezone.utc)
    bundle_id = f"{created:%Y%m%dT%H%M%SZ}-{fingerprint[:10]}"
    vocab = dataset.vocab
    history = History.of(dataset.history, vocab.n_users, vocab.n_items, config.lstm.window)
    rng = np.random.default_rng(seeds(config.seed)["parity"])
    pairs = reference_pairs(vocab.n_users, vocab.n_items, dataset.test.users, dataset.test.items, rng)
    with RootLock(root, advice="wait for it to finish (no two trainings publish into one artifacts root)"):
        remove_stale_staging(root)
        staging = new_staging_dir(root, bundle_id)
        try:
            references: dict[str, np.ndarray] = {}
            models: dict[str, Any] = {}
            for model in trained:
                metadata = {"model": model.name, "bundle_id": bundle_id, "version": bundle_id,
                            "test_metrics": model.test_metrics}
                started = time.perf_counter()
                exported = _export_model(model, dataset, history, staging, pairs,
                                         min(len(dataset.test), PARITY_MAX_TEST_PAIRS), metadata)
                references.update({f"{model.name}_users": pairs[0], f"{model.name}_items": pairs[1],
                                   f"{model.name}_scores": exported["reference"],
                                   f"{model.name}_ranks": exported["reference_rank"]})
                models[model.name] = {
                    "test_metrics": model.test_metrics,
                    "post_rmse_unit": POST_RMSE_UNIT[model.name],
                    "best_epoch": model.fit.best_epoch,
                    "best_validation_rmse_unit": model.fit.best_val_rmse,
                    "learning_curve": model.fit.epochs,
                    "refit_curve": model.fit.refit_epochs,
                    "histogram": model.histogram,
                    "train_seconds": round(model.fit.seconds, 3),
                    "export_seconds": round(time.perf_counter() - started, 3),
                    "parity": exported["parity"],
                    "parameters": int(sum(p.numel() for p in model.module.parameters())),
                }
            # sorted: the file's bytes must not depend on the order in which the models finished
            np.savez(staging / layout.REFERENCE, **dict(sorted(references.items())))
            _write_vocab_and_history(dataset, history, staging)
            manifest = {
                "schema_version": layout.SCHEMA_VERSION,
                "bundle_id": bundle_id,
                "created_utc": created.isoformat(),
                "fingerprint": fingerprint,
                "seed": config.seed,
                "config": config.to_dict(),
                "data": {"files_md5": data_checksums, **dataset.notes, "n_train": len(dataset.train),
                         "n_validation": len(dataset.validation), "n_test": len(dataset.test),
                         "n_history": len(dataset.history)},
                "n_users": vocab.n_users,
                "n_items": vocab.n_items,
                "window": config.lstm.window,
                "padding_index": vocab.n_items,
                "baseline_global_mean": baseline_metrics(dataset),
                "models": models,
                "exporter": EXPORTER_SETTINGS,
                "versions": versions(),
                "files": {p.name: sha256_file(p) for p in sorted(staging.iterdir())},
            }
            (staging / layout.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            final = publish(staging, root, bundle_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info("bundle published: %s", final)
    return final
