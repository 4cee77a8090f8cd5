"""Train several models at once, one worker process each, sharing out the CPUs.

Training a small model is bound by per-batch overheads that a second torch thread barely
shortens (MF and the dense net run no faster on 2 threads than on 1), so on a machine with
several CPUs the models train side by side, each with its share of the CPUs, instead of one
after another.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import torch

from contract.cli import configure_logging
from contract.errors import TrainingError, UsageError
from contract.failpoints import failpoint
from contract.machine import available_cpus

from ..config import RunConfig, child_seed
from ..data.dataset import Dataset
from ..models import registry
from ..models.base import Family
from . import epoch
from .trainer import TrainedModel, train_model


SIDE_BY_SIDE_MIN_RATINGS = 10_000
"""Training ratings from which the models train side by side by default. Below it a worker's
start (a fresh interpreter importing torch, then the data set sent to it) takes longer than the
share of training it would take over, so the models train one after another in this process."""


def default_jobs(config: RunConfig, n_training: int) -> int:
    """One worker per model, up to the CPUs this process may use, for a training split of
    ``n_training`` ratings; one (this process) when training on a GPU or on a small split."""
    if config.device != "cpu" or n_training < SIDE_BY_SIDE_MIN_RATINGS:
        return 1
    return max(1, min(len(config.models), available_cpus()))


def add_jobs_option(parser: argparse.ArgumentParser) -> None:
    """``--jobs``, shared by the commands that train."""
    parser.add_argument("--jobs", type=int, help="models trained at once, one worker process each (default: one "
                                                 f"per model up to the CPUs available; 1 with --device cuda or "
                                                 f"under {SIDE_BY_SIDE_MIN_RATINGS:,} training ratings)")


def jobs_option(value: int | None) -> int | None:
    """The ``--jobs`` value; None (decided per data set by ``default_jobs``) when it was not given."""
    if value is not None and value < 1:
        raise UsageError(f"--jobs: expected a positive integer, got {value}")
    return value


def train_models(dataset: Dataset, config: RunConfig, jobs: int | None = None) -> list[TrainedModel]:
    """Train every model of ``config``, results in ``config.models`` order (see ``trained_as_completed``)."""
    by_name = {model.name: model for model in trained_as_completed(dataset, config, jobs)}
    return [by_name[name] for name in config.models]


def trained_as_completed(dataset: Dataset, config: RunConfig, jobs: int | None = None) -> Iterator[TrainedModel]:
    """Train every model of ``config`` and yield each as soon as it is trained: in this process,
    in ``config.models`` order, when ``jobs`` is 1; otherwise in ``jobs`` worker processes with
    ``cpus // jobs`` torch threads each, in the order they finish, so that the caller can export
    one model while the others still train. ``jobs`` None: ``default_jobs`` for this data set.

    Each model's result depends on its seed, not on which worker trained it or when. Closing the
    iterator early (the caller failed) cancels the models not started and waits for those running.
    """
    names = list(config.models)
    if jobs is None:
        jobs = default_jobs(config, len(dataset.train.ratings))
    if jobs <= 1 or len(names) <= 1:
        for name in names:
            yield train_model(name, dataset, config, child_seed(config.seed, name))
        return
    workers = min(jobs, len(names))
    threads = max(1, available_cpus() // workers)
    order = sorted(names, key=lambda n: -registry.get(n).training_cost)   # the longest does not start last
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker,
                               initargs=(dataset, threads, logging.getLogger().level, registry.registered()))
    try:
        futures = [pool.submit(_train, name, config, child_seed(config.seed, name)) for name in order]
        for future in as_completed(futures):
            yield future.result()
    except BrokenProcessPool as exc:
        raise TrainingError(f"a training worker process died before finishing ({exc}); if the machine ran "
                            f"out of memory, train fewer models at once (--jobs 1)") from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_DATASET: Dataset | None = None
"""The data set a worker process trains on, sent once when the worker starts (not once per model)."""


def _start_worker(dataset: Dataset, threads: int, level: int, families: tuple[Family, ...]) -> None:
    """Set up a fresh worker: the parent's model families, the data set, its share of the CPUs,
    the parent's log level, no progress bars (several on one terminal would overwrite each other;
    the epoch log lines remain)."""
    global _DATASET
    for family in families:
        registry.register(family)
    _DATASET = dataset
    torch.set_num_threads(threads)
    configure_logging(verbose=level <= logging.DEBUG)
    epoch.PROGRESS_BARS = False
    failpoint("training_worker_started")


def _train(name: str, config: RunConfig, seed: int) -> TrainedModel:
    """``train_model`` in a worker, on the data set it was started with."""
    assert _DATASET is not None, "worker not started by trained_as_completed"
    return train_model(name, _DATASET, config, seed)
