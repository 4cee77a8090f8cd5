"""From the command line's data options to a split ``Dataset``, with checksums of every input."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from contract.checksums import md5_file
from contract.errors import DataError
from contract.paths import DEFAULT_DATA_DIR
from contract.scale import MOVIELENS_STARS, RatingScale

from ..config import RunConfig
from .dataset import Dataset, Interactions, Vocabulary
from .fetch import fetch_movielens
from .ratings import parse_items, parse_ratings
from .split import split_frame
from .synthetic import generate_ratings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    """Where the ratings come from: the cached MovieLens download, a folder, or explicit files."""

    data_dir: Path | None = None
    """An ml-100k folder with ``u.data`` and optionally ``u.item``."""
    train_file: Path | None = None
    test_file: Path | None = None
    cache_dir: Path = DEFAULT_DATA_DIR
    """Download cache used when neither of the above is given."""
    synthetic: tuple[int, int, int] | None = None
    """Generate (users, items, ratings) seeded synthetic ratings instead of reading files."""

    def resolve(self) -> tuple[list[Path], Path | None]:
        """Ratings files (one, or train then test) and the items file if there is one."""
        if (self.train_file is None) != (self.test_file is None):
            raise DataError("--train-file and --test-file go together; give both or neither")
        if self.train_file is not None:
            items = self.train_file.parent / "u.item"
            return [self.train_file, self.test_file], items if items.is_file() else None
        folder = self.data_dir if self.data_dir is not None else fetch_movielens(self.cache_dir)
        if not folder.is_dir():
            raise DataError(f"{folder}: --data-dir is not a directory")
        items = folder / "u.item"
        return [folder / "u.data"], items if items.is_file() else None


def describe_files(paths: list[Path]) -> dict[str, str]:
    """md5 of each input file, keyed by its path as given."""
    return {str(p): md5_file(p) for p in paths}


def build_dataset(frames: list[pd.DataFrame], config: RunConfig, rng: np.random.Generator,
                  titles: dict[int, str] | None = None, scale: RatingScale = MOVIELENS_STARS) -> Dataset:
    """Split one frame into train/validation/test, or an explicit (train, test) pair into
    train/validation plus test; test pairs with a user or item unseen in training are dropped."""
    notes: dict[str, int] = {}
    if len(frames) == 1:
        (train, validation, test), notes["moved_to_train"] = split_frame(frames[0], rng, config.split)
        history_frame = frames[0]
    else:
        fraction = config.validation_fraction
        (train, validation), notes["moved_to_train"] = split_frame(frames[0], rng, (1 - fraction, fraction))
        test, history_frame = frames[1], frames[0]
    vocab = Vocabulary.from_frame(train)
    warm = vocab.known(test)
    notes["cold_start_test_dropped"] = int((~warm).sum())
    if notes["cold_start_test_dropped"]:
        log.warning("test set: %d ratings of users or items with no training rating are left out "
                    "of the metrics (cold start: the models have no embedding for them)",
                    notes["cold_start_test_dropped"])
    dataset = Dataset(
        vocab=vocab,
        scale=scale,
        train=Interactions.from_frame(train, vocab, scale),
        validation=Interactions.from_frame(validation, vocab, scale),
        test=Interactions.from_frame(test[warm], vocab, scale),
        history=Interactions.from_frame(history_frame, vocab, scale),
        item_titles=titles or {},
        notes=notes,
    )
    log.info("data: %d users, %d items; %d train, %d validation, %d test ratings",
             vocab.n_users, vocab.n_items, len(dataset.train), len(dataset.validation), len(dataset.test))
    return dataset


def load_dataset(source: DataSource, config: RunConfig,
                 rng: np.random.Generator) -> tuple[Dataset, dict[str, str]]:
    """Parse, validate and split the configured data; return it with the inputs' checksums."""
    if source.synthetic is not None:
        frame = generate_ratings(*source.synthetic, seed=config.seed)
        shape = ",".join(map(str, source.synthetic))
        return build_dataset([frame], config, rng), {f"synthetic:{shape}": f"seed={config.seed}"}
    paths, items_path = source.resolve()
    frames = [parse_ratings(p) for p in paths]
    titles = None
    if items_path is not None:
        items = parse_items(items_path)
        titles = dict(zip(items["item_id"].tolist(), items["title"].tolist()))
    return build_dataset(frames, config, rng, titles), describe_files(paths)
