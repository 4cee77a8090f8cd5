"""``make bench BENCH_ARGS="--feedback-throughput ml-20m"``: each family's training throughput on
one synthetic catalogue read as ratings and as implicit interactions (the same pairs, plays from
the planted taste), measured alternately in one process so that both see the same machine.

A measurement is one training pass of the real epoch code cut off after ``seconds``: the rating
fit's (``train_epoch``: batch loss, sampled items, optimizer step, penalty) and the ranking fit's
(``ranking_fit.pass_throughput``: the softmax for ratings, the squared row loss for
interactions). The figure is training rows (ratings or interactions) per second, the one
``make bench`` reports for a whole fit.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract.feedback import IMPLICIT, IMPLICIT_SCALE, confidence
from export.config import RunConfig, child_seed
from export.data.dataset import Dataset
from export.data.loading import build_dataset
from export.data.synthetic import as_interactions, generate_ratings, parse_shape
from export.models import registry
from export.models.base import init_parameters
from export.training.epoch import Objective, optimizer_for, train_epoch
from export.training.heap import keep_heap_resident
from export.training.penalty import penalty_terms
from export.training.ranking_fit import pass_throughput

log = logging.getLogger(__name__)


def datasets(shape: str, seed: int) -> dict[str, Dataset]:
    """The catalogue as ratings and as interactions, split alike."""
    config = RunConfig(seed=seed)
    frame = generate_ratings(*parse_shape(shape), seed=seed, with_truth=True)
    interactions = as_interactions(frame, seed)
    implicit = interactions.drop(columns="weight").assign(rating=confidence(interactions["weight"].to_numpy()))
    del interactions
    split = lambda: np.random.default_rng(child_seed(seed, "split"))  # noqa: E731
    out = {"implicit": build_dataset([implicit], config, split(), scale=IMPLICIT_SCALE, feedback=IMPLICIT)}
    del implicit
    out["explicit"] = build_dataset([frame.drop(columns="expected")], config, split())
    return out


def model_config(name: str, dataset: Dataset, seed: int) -> Any:
    """The family's settings as a run on ``dataset`` trains it (adjusted for implicit feedback)."""
    family = registry.get(name)
    config = RunConfig(seed=seed).model_config(name)
    return family.implicit_config(config) if dataset.implicit else config


def throughput(name: str, dataset: Dataset, rows: Any, seconds: float, seed: int) -> float:
    """Training rows per second of one pass of ``name`` over ``rows`` (its training inputs of
    ``dataset``, built once), cut after ``seconds``."""
    family = registry.get(name)
    config = model_config(name, dataset, seed)
    vocab, training = dataset.vocab, config.training
    generator = torch.Generator().manual_seed(seed)
    module = family.build(config, vocab.n_users, vocab.n_items, float(dataset.train.unit.mean()))
    init_parameters(module, generator)
    inputs, targets = rows
    optimizer = optimizer_for(module, training, len(targets))
    penalty = penalty_terms(module, family, training)
    started = time.perf_counter()
    _, seen, _ = train_epoch(module, Objective(family, vocab.n_items), (inputs, targets), optimizer, penalty,
                             training, generator, f"{name} {dataset.feedback}", started + seconds)
    elapsed = time.perf_counter() - started
    optimizer.release()
    return seen / elapsed


def ranking_throughput(name: str, dataset: Dataset, seconds: float, seed: int) -> float:
    """Training rows per second of one pass of ``name``'s ranking fit over ``dataset``'s training
    rows (its head restarted as the fit restarts it), cut after ``seconds``."""
    family = registry.get(name)
    config = model_config(name, dataset, seed)
    vocab = dataset.vocab
    generator = torch.Generator().manual_seed(seed)
    module = family.build(config, vocab.n_users, vocab.n_items, float(dataset.train.unit.mean()))
    init_parameters(module, generator)
    family.restart_ranking(module, generator)
    return pass_throughput(module, family, dataset.train, config.training, generator, seconds)


def run_feedback_bench(shape: str, models: tuple[str, ...], seconds: float, repeat: int, out: Path,
                       seed: int = 42) -> dict[str, Any]:
    keep_heap_resident()
    torch.set_flush_denormal(True)
    started = time.perf_counter()
    data = datasets(shape, seed)
    log.info("data: %s, %.0f s", {k: len(v.train) for k, v in data.items()}, time.perf_counter() - started)
    figures: dict[str, Any] = {}
    for name in models:
        runs: dict[str, list[float]] = {"explicit": [], "implicit": []}
        ranking: dict[str, list[float]] = {"explicit": [], "implicit": []}
        rows = {feedback: registry.get(name).training_inputs(data[feedback].train,
                                                              model_config(name, data[feedback], seed),
                                                              data[feedback].vocab.n_items) for feedback in runs}
        for _ in range(repeat):
            for feedback in runs:   # alternated, so that both meet the machine alike
                runs[feedback].append(throughput(name, data[feedback], rows[feedback], seconds, seed))
                ranking[feedback].append(ranking_throughput(name, data[feedback], seconds, seed))
                log.info("%s %s: %.0fK rows/s, ranking fit %.0fK rows/s", name, feedback, runs[feedback][-1] / 1e3,
                         ranking[feedback][-1] / 1e3)
        explicit, implicit = (float(np.median(runs[k])) for k in ("explicit", "implicit"))
        explicit_ranking, implicit_ranking = (float(np.median(ranking[k])) for k in ("explicit", "implicit"))
        figures[name] = {"explicit_rows_per_s": explicit, "implicit_rows_per_s": implicit,
                         "explicit_over_implicit": explicit / implicit, "runs": runs,
                         "ranking_fit": {"explicit_rows_per_s": explicit_ranking,
                                         "implicit_rows_per_s": implicit_ranking,
                                         "explicit_over_implicit": explicit_ranking / implicit_ranking,
                                         "runs": ranking}}
    result = {"shape": shape, "seconds_per_pass": seconds, "repeat": repeat, "torch_threads": torch.get_num_threads(),
              "training_rows": {k: len(v.train) for k, v in data.items()}, "models": figures}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\ntraining throughput at {shape}, median of {repeat} passes of {seconds:g} s each, alternated")
    print(f"{'model':6s} {'ratings/s':>10s} {'interactions/s':>15s} {'ratio':>6s}")
    for name, f in figures.items():
        print(f"{name:6s} {f['explicit_rows_per_s'] / 1e3:9.0f}K {f['implicit_rows_per_s'] / 1e3:14.0f}K "
              f"{f['explicit_over_implicit']:6.2f}")
    print("ranking fit (softmax over ratings, squared rows over interactions)")
    for name, f in figures.items():
        r = f["ranking_fit"]
        print(f"{name:6s} {r['explicit_rows_per_s'] / 1e3:9.0f}K {r['implicit_rows_per_s'] / 1e3:14.0f}K "
              f"{r['explicit_over_implicit']:6.2f}")
    return result
